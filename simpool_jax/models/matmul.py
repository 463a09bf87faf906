"""Matrix products for the layers: the bf16 ways of computing them, and a faster float32 weight
gradient on XLA:CPU for weights with few columns (`narrow_weight_matmul`).

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


# XLA:CPU computes the weight gradient a^T g of a float32 product a (m, k) @ b (k, n) much slower
# than the transposed product g^T a when b has few columns (bench/weight_gradient.py, two Xeon
# cores): 105 against 187 GF/s for the main job's MLP fc2 (m = 6272, k = 384, n = 96), 1.15x
# faster for ConvNeXt-S's 768 -> 192; mixed from n = 256 (0.97-1.2x), nothing at n = 384 or with
# fewer than ~1000 rows. A Zen 4 core showed the same for n = 96 (6.2 against 3.4 ms).
NARROW_COLUMNS = 192
MIN_ROWS = 1024


@jax.custom_vjp
def narrow_weight_matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """a @ b for 2-D float32 a (m, k) and b (k, n), whose gradient computes b's as (g^T a)^T.

    Same products as autodiff's (XLA's accumulation order: the same values to the last bit in
    the measured cases), only the weight gradient's orientation changes; the transpose of its
    small (n, k) result is a copy XLA cannot fold back into the product (`_transposed`)."""
    return a @ b


def _narrow_weight_matmul_fwd(a, b):
    return a @ b, (a, b)


def _narrow_weight_matmul_bwd(residuals, g):
    a, b = residuals
    b_t = b.T  # its sharding is the gradient's: an explicit-axes mesh needs it (rows contracted)
    db_t = jax.lax.dot_general(g, a, (((0,), (0,)), ((), ())),
                               out_sharding=jax.typeof(b_t).sharding)
    return g @ b_t, _transposed(db_t)


narrow_weight_matmul.defvjp(_narrow_weight_matmul_fwd, _narrow_weight_matmul_bwd)


def _narrow_weight(a: jax.Array, b: jax.Array) -> bool:
    """Whether a float32 product goes to `narrow_weight_matmul`: on CPU, 2-D, at least MIN_ROWS
    rows of a, and b with fewer columns than rows, at most NARROW_COLUMNS."""
    return (jax.default_backend() == "cpu" and a.ndim == b.ndim == 2 and a.shape[0] >= MIN_ROWS
            and b.shape[1] < b.shape[0] and b.shape[1] <= NARROW_COLUMNS)


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
    `precision` applies to the other products (jnp.matmul's); float32 products on CPU with a
    narrow weight go to `narrow_weight_matmul` (XLA:CPU computes float32 at full precision)."""
    dtype = jnp.result_type(a, b)
    if not _bf16_operands(dtype):
        narrow = dtype == jnp.float32 and _narrow_weight(a, b)
        y = narrow_weight_matmul(a, b) if narrow else jnp.matmul(a, b, precision=precision)
        return y if bias is None else y + bias.astype(dtype)
    y = bf16_matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
    return (y if bias is None else y + bias.astype(jnp.float32)).astype(dtype)
