"""Matrix products for the layers, and the bf16 ways of computing them.

Two bf16 modes reach these products (the trainers' `compute_dtype`):
  'bfloat16'        params and activations are bf16 (bf16 copies); products of bf16 operands.
  'bfloat16_matmul' params and activations stay float32; inside `bf16_matmuls()` the layers'
                    products take bf16 copies of their operands: torch.autocast(bfloat16)'s
                    numerics for matmuls, float32 for everything else.
Either way the product is `bf16_matmul`: bf16 operands, float32 accumulation and result, and the
same for both gradient products. XLA:CPU's own lowering of a bf16 dot converts both operands to
float32 and runs the float32 kernel (no faster than float32); it also ignores dot algorithms
(`DotAlgorithmPreset.BF16_BF16_F32` runs in float32), so the operands are cast here.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import jax
import jax.numpy as jnp

_BF16_MATMULS = contextvars.ContextVar("bf16_matmuls", default=False)


@contextlib.contextmanager
def bf16_matmuls(enabled: bool = True) -> Iterator[None]:
    """Within (at trace time, like jax.default_matmul_precision): float32 products of the layers
    (`matmul`, `Dense`) multiply bf16 copies of their operands into float32. `enabled=False`
    opts a computation out (SimPool keeps float32 products)."""
    token = _BF16_MATMULS.set(enabled)
    try:
        yield
    finally:
        _BF16_MATMULS.reset(token)


def _transposed(x: jax.Array) -> jax.Array:
    """x with its last two axes swapped; 2-D on CPU as a row-major copy, not a transposed view.

    XLA folds a plain x.T into the layout of the dot that reads it, and XLA:CPU runs a 2-D bf16
    dot on its bf16 kernels only when neither operand is transposed: otherwise it converts both
    to float32 first (half the speed). Splitting the columns before the transpose cannot be
    folded, so the copy is made. Odd widths keep the plain transpose (correct, slower)."""
    if x.ndim != 2 or x.shape[1] % 2 or jax.default_backend() != "cpu":
        return jnp.swapaxes(x, -1, -2)
    m, k = x.shape
    return jnp.transpose(x.reshape(m, k // 2, 2), (1, 2, 0)).reshape(k, m)


def _f32_product(a: jax.Array, b: jax.Array, like: jax.Array | None = None) -> jax.Array:
    """a @ b (batch axes leading, as `@`) into float32. `like`: sharded as this array, which an
    explicit-axes mesh needs when the contracted rows are sharded (the weight gradient), as
    JAX's own dot transpose does."""
    out_sharding = None if like is None else jax.typeof(like).sharding
    batch = tuple(range(a.ndim - 2))
    return jax.lax.dot_general(a, b, (((a.ndim - 1,), (b.ndim - 2,)), (batch, batch)),
                               preferred_element_type=jnp.float32, out_sharding=out_sharding)


@jax.custom_vjp
def bf16_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b for bf16 (..., m, k) x (..., k, n), into float32, every product on bf16 kernels.

    The gradient products also multiply bf16 operands (the float32 cotangent rounded to bf16)
    into float32, rounded once to the operands' bf16; as the bf16 copies that torch.autocast
    multiplies, whose gradients are bf16 too.
    """
    return _f32_product(a, b)


def _bf16_matmul_fwd(a, b):
    return _f32_product(a, b), (a, b)


def _bf16_matmul_bwd(residuals, g):
    a, b = residuals
    g = g.astype(jnp.bfloat16)
    da = _f32_product(g, _transposed(b)).astype(a.dtype)
    db = _f32_product(_transposed(a), g, like=b if b.ndim == 2 else None)
    return da, db.astype(b.dtype)


bf16_matmul.defvjp(_bf16_matmul_fwd, _bf16_matmul_bwd)


def _bf16_operands(dtype: jnp.dtype) -> bool:
    """Whether products of this dtype go to `bf16_matmul`: bf16 on CPU (elsewhere XLA's own bf16
    dot is the fast one), float32 inside `bf16_matmuls()` (any backend)."""
    if dtype == jnp.bfloat16:
        return jax.default_backend() == "cpu"
    return dtype == jnp.float32 and _BF16_MATMULS.get()


def matmul(a: jax.Array, b: jax.Array, bias: jax.Array | None = None,
           precision: jax.lax.PrecisionLike = None) -> jax.Array:
    """a @ b (+ bias), in the dtype of a and b; the bf16 products go to `bf16_matmul`, with the
    bias added (and its gradient summed) in float32 before the one rounding of the result.
    `precision` applies to the other products (jnp.matmul's)."""
    dtype = jnp.result_type(a, b)
    if not _bf16_operands(dtype):
        y = jnp.matmul(a, b, precision=precision)
        return y if bias is None else y + bias.astype(dtype)
    y = bf16_matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
    return (y if bias is None else y + bias.astype(jnp.float32)).astype(dtype)
