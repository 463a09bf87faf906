"""The layers' products in bf16 (simpool_jax.models.matmul), against float64 products of the
same bf16-rounded values: the bf16 Dense of compute_dtype='bfloat16', and the float32 layers
inside `bf16_matmuls()` (compute_dtype='bfloat16_matmul', torch.autocast's matmul numerics)."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simpool_jax.model import build_model
from simpool_jax.models.layers import Dense
from simpool_jax.models.matmul import bf16_matmul, bf16_matmuls
from simpool_jax.pooling.simpool import SimPool


def _f64(a) -> np.ndarray:
    return np.asarray(a, np.float64)


def _bf16_dense_case(use_bias: bool, features: int = 56, width: int = 40):
    """bf16 params and input (the trainers' compute_dtype cast), (2, 24, width) -> features, and
    the float64 products of the same bf16 values: output, and the gradients of sum(y * c)."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, 24, width)), jnp.bfloat16)
    params = jax.tree.map(lambda p: p.astype(jnp.bfloat16),
                          Dense(features, use_bias=use_bias).init(jax.random.PRNGKey(2), x))
    if use_bias:
        params["params"]["bias"] = jnp.asarray(rng.standard_normal(features), jnp.bfloat16)
    c = jnp.asarray(rng.standard_normal((2, 24, features)), jnp.bfloat16)
    rows, kernel = _f64(x).reshape(48, width), _f64(params["params"]["kernel"])
    g = _f64(c).reshape(48, features)
    ref = {"y": rows @ kernel + (_f64(params["params"]["bias"]) if use_bias else 0.0),
           "dx": (g @ kernel.T).reshape(2, 24, width), "dkernel": rows.T @ g, "dbias": g.sum(0)}
    return x, params, c, ref


@pytest.mark.parametrize("use_bias,features,width", [
    (True, 56, 40), (False, 56, 40),
    (True, 24, 40),  # fewer features than inputs
    (True, 23, 41),  # odd widths: XLA's own transposes
])
def test_dense_in_bf16_matches_float64_products_of_the_bf16_values(use_bias, features, width):
    """Output and all three gradients are the float64 results rounded once to bf16 (float32
    accumulation): within half a bf16 ulp plus the float32 sum's error, for any transpose or
    operand mix-up the error would be of the order of the values themselves."""
    x, params, c, ref = _bf16_dense_case(use_bias, features, width)
    dense = Dense(features, use_bias=use_bias)
    y, vjp = jax.vjp(lambda p, x: dense.apply(p, x), params, x)
    dparams, dx = vjp(c)
    assert y.dtype == dx.dtype == dparams["params"]["kernel"].dtype == jnp.bfloat16
    got = {"y": y.reshape(48, features), "dx": dx, "dkernel": dparams["params"]["kernel"]}
    if use_bias:
        got["dbias"] = dparams["params"]["bias"]
    for name, value in got.items():
        np.testing.assert_allclose(_f64(value), ref[name], rtol=2**-8,
                                   atol=1e-3 * np.abs(ref[name]).max(), err_msg=name)


def _dot_operand_dtypes(hlo_text: str) -> list[tuple[str, ...]]:
    """The element types of every dot's operands in compiled HLO text, computation by
    computation (parameter names repeat across computations)."""
    found = []
    for block in re.split(r"\n(?=\S)", hlo_text):
        types = dict(re.findall(r"([\w.\-]+): (\w+)\[", block.split("\n")[0]))
        types.update(re.findall(r"%([\w.\-]+) = (\w+)\[", block))
        for args in re.findall(r" dot\(([^)]*)\)", block):
            found.append(tuple(types[a.strip().lstrip("%")] for a in args.split(",")))
    return found


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's bf16 dot lowering")
def test_dense_in_bf16_multiplies_bf16_operands_on_cpu():
    """All three products of the compiled bf16 gradient (forward, input and weight gradients)
    read bf16 operands. XLA:CPU's own lowering (nn.Dense) converts them to float32 first and
    runs the float32 kernel: no faster than float32 training."""
    x, params, c, _ = _bf16_dense_case(True)

    def dot_operands(module):
        def loss(p, x):
            return jnp.sum(jnp.square(module.apply(p, x).astype(jnp.float32)) * c.astype(jnp.float32))
        return _dot_operand_dtypes(
            jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile().as_text())

    assert dot_operands(Dense(56)) == [("bf16", "bf16")] * 3
    assert dot_operands(nn.Dense(56)) == [("f32", "f32")] * 3


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_dense_in_bf16_gradient_on_a_batch_sharded_mesh(axis_type):
    """Rows sharded over 4 devices: the weight gradient contracts the sharded rows, which an
    explicit-axes mesh refuses without an output sharding. Same gradients as one device, to
    within one bf16 rounding of the float32 partial sums."""
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    mesh = jax.make_mesh((4,), ("data",), axis_types=(getattr(AxisType, axis_type),))
    x, params, c, _ = _bf16_dense_case(True)
    x, c = jnp.tile(x, (2, 1, 1)), jnp.tile(c, (2, 1, 1))  # batch 4, one example per device

    def grads(p, x):
        def loss(p, x):
            return jnp.sum(Dense(56).apply(p, x).astype(jnp.float32) * c.astype(jnp.float32))
        return jax.grad(loss, argnums=(0, 1))(p, x)

    expected = jax.jit(grads)(params, x)
    with jax.set_mesh(mesh):
        sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
        got = jax.jit(grads)(jax.device_put(params, NamedSharding(mesh, PartitionSpec())), sharded)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        b = np.asarray(b, np.float32)
        np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=2**-8, atol=1e-6)


def _bf16(a) -> np.ndarray:
    """Float64 values of a rounded to bf16."""
    return _f64(jnp.asarray(a, jnp.float32).astype(jnp.bfloat16))


@pytest.mark.parametrize("a_shape,b_shape", [
    ((48, 40), (40, 56)), ((48, 40), (40, 24)), ((48, 41), (41, 23)),
    ((6, 9, 8), (6, 8, 9)),  # batched, as the attention products
])
def test_bf16_matmul_and_its_gradients_are_float64_products_of_bf16_values(a_shape, b_shape):
    """Result: float32, the float64 product of the bf16 operands to float32 accuracy. Gradients:
    the float32 cotangent rounded to bf16 times the bf16 operands, rounded once to bf16."""
    rng = np.random.default_rng(7)
    a = jnp.asarray(rng.standard_normal(a_shape), jnp.bfloat16)
    b = jnp.asarray(rng.standard_normal(b_shape), jnp.bfloat16)
    y, vjp = jax.vjp(jax.jit(bf16_matmul), a, b)
    g = rng.standard_normal(y.shape).astype(np.float32)
    da, db = vjp(jnp.asarray(g))
    assert y.dtype == jnp.float32 and da.dtype == db.dtype == jnp.bfloat16
    g16 = _bf16(g)
    ref = {"y": _f64(a) @ _f64(b), "da": g16 @ np.swapaxes(_f64(b), -1, -2),
           "db": np.swapaxes(_f64(a), -1, -2) @ g16}
    np.testing.assert_allclose(_f64(y), ref["y"], rtol=1e-6, atol=1e-5)
    for name, value in (("da", da), ("db", db)):
        np.testing.assert_allclose(_f64(value), ref[name], rtol=2**-8, atol=1e-3, err_msg=name)


def test_dense_inside_bf16_matmuls_multiplies_bf16_copies_into_float32():
    """float32 params and input: inside the context the result (float32) is the product of their
    bf16 copies plus the float32 bias, which differs from the float32 product by bf16 rounding
    (~1e-2 here, 100x the tolerance); outside it, the float32 product again."""
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.standard_normal((2, 24, 40)), jnp.float32)
    dense = Dense(56)
    params = dense.init(jax.random.PRNGKey(2), x)
    params["params"]["bias"] = jnp.asarray(rng.standard_normal(56), jnp.float32)
    kernel, bias = params["params"]["kernel"], _f64(params["params"]["bias"])
    with bf16_matmuls():
        y, vjp = jax.vjp(lambda p, x: dense.apply(p, x), params, x)
    dparams, dx = vjp(jnp.ones_like(y))
    assert y.dtype == dx.dtype == dparams["params"]["kernel"].dtype == jnp.float32
    mixed = _bf16(x).reshape(48, 40) @ _bf16(kernel) + bias
    full = _f64(x).reshape(48, 40) @ _f64(kernel) + bias
    np.testing.assert_allclose(_f64(y).reshape(48, 56), mixed, rtol=1e-5, atol=1e-4)
    assert np.abs(mixed - full).max() > 2e-3
    np.testing.assert_allclose(_f64(dense.apply(params, x)).reshape(48, 56), full, rtol=1e-5,
                               atol=1e-4)


def _lowered_dot_operands(fn, *args) -> set[tuple[str, str]]:
    """Operand element types of every dot_general that jax lowers `fn` to (what the layers ask
    for; XLA:CPU may still upcast products too small for its bf16 kernels)."""
    text = jax.jit(fn).lower(*args).as_text()
    return set(re.findall(r"stablehlo\.dot_general .*: \(tensor<(?:\d+x)*(\w+)>, tensor<(?:\d+x)*(\w+)>\)", text))


def test_bf16_matmuls_reach_every_vit_product_but_not_simpool():
    """The gradient of a ViT (patch embedding, qkv, both attention products, proj, MLP) and a
    DINO head inside `bf16_matmuls()` multiplies bf16 operands only; outside, float32 only.
    SimPool opts out: its products stay float32 inside the context."""
    model = build_model(dict(backbone="vit_tiny", pooling="gap", recipe="dino", head="dino",
                             backbone_kwargs=dict(width=32, depth=1, num_heads=2, patch_size=4,
                                                  posemb_grid=(4, 4), posemb_resample="none"),
                             head_kwargs=dict(out_dim=16, hidden_dim=24, bottleneck_dim=8)))
    images = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16, 3)), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), images)["params"]

    def loss(p, x):
        return jnp.sum(jnp.sin(model.apply({"params": p}, x)["logits"]))

    def loss_in_context(p, x):
        with bf16_matmuls():
            return loss(p, x)

    assert _lowered_dot_operands(jax.grad(loss_in_context), params, images) == {("bf16", "bf16")}
    assert _lowered_dot_operands(jax.grad(loss), params, images) == {("f32", "f32")}
    tokens = images.reshape(2, 48, 16)
    pool = SimPool(gamma=1.25)
    pool_params = pool.init(jax.random.PRNGKey(1), tokens, (8, 6))

    def pooled_in_context(p, t):
        with bf16_matmuls():
            return jnp.sum(pool.apply(p, t, (8, 6))[0])

    assert _lowered_dot_operands(jax.grad(pooled_in_context), pool_params, tokens) == {("f32", "f32")}


def _narrow_dense_case(rows: int, width: int, features: int):
    """A float32 Dense (rows tokens, width -> features) with a random bias and cotangent, and the
    float64 output and gradients of sum(y * c)."""
    rng = np.random.default_rng(11)
    x = jnp.asarray(rng.standard_normal((rows // 128, 128, width)), jnp.float32)
    params = Dense(features).init(jax.random.PRNGKey(3), x)
    params["params"]["bias"] = jnp.asarray(rng.standard_normal(features), jnp.float32)
    c = jnp.asarray(rng.standard_normal((rows // 128, 128, features)), jnp.float32)
    flat, g = _f64(x).reshape(rows, width), _f64(c).reshape(rows, features)
    kernel = _f64(params["params"]["kernel"])
    ref = {"y": flat @ kernel + _f64(params["params"]["bias"]),
           "dx": (g @ kernel.T).reshape(x.shape), "dkernel": flat.T @ g, "dbias": g.sum(0)}
    return x, params, c, ref


def _dense_grads(features: int, c: jax.Array):
    def grads(p, x):
        def loss(p, x):
            return jnp.sum(Dense(features).apply(p, x) * c)
        return jax.grad(loss, argnums=(0, 1))(p, x)
    return grads


@pytest.mark.parametrize("width", [48, 47])  # 47: odd, the plain transpose of the result
def test_narrow_weight_float32_dense_matches_float64(width):
    """A float32 Dense with a narrow weight (24 of 48 columns, 1024 rows: `narrow_weight_matmul`
    on CPU): output and gradients are the float64 results to float32 accuracy; a swapped or
    untransposed weight gradient would be off by the size of the values."""
    x, params, c, ref = _narrow_dense_case(1024, width, 24)
    y = Dense(24).apply(params, x)
    dparams, dx = jax.jit(_dense_grads(24, c))(params, x)
    got = {"y": y.reshape(1024, 24), "dx": dx, "dkernel": dparams["params"]["kernel"],
           "dbias": dparams["params"]["bias"]}
    for name, value in got.items():
        assert value.shape == ref[name].shape, name
        np.testing.assert_allclose(_f64(value), ref[name], rtol=1e-5,
                                   atol=1e-5 * np.abs(ref[name]).max(), err_msg=name)


def _dot_shapes(hlo_text: str) -> list[str]:
    return re.findall(r"= f32\[([\d,]+)\]\{[\d,]*\} dot\(", hlo_text)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU kernel choice")
@pytest.mark.parametrize("rows,width,features,transposed", [
    (1024, 48, 24, True),    # narrow weight: computed as (g^T a)^T
    (1024, 24, 48, False),   # wide weight: a^T g, XLA's own
    (512, 48, 24, False),    # too few rows to gain: a^T g
])
def test_narrow_weight_gradient_orientation(rows, width, features, transposed):
    """The compiled float32 weight gradient of a Dense multiplies in the orientation
    bench/weight_gradient.py measured faster on XLA:CPU: (features, width) when transposed."""
    x, params, c, _ = _narrow_dense_case(rows, width, features)
    hlo = jax.jit(_dense_grads(features, c)).lower(params, x).compile().as_text()
    shapes = _dot_shapes(hlo)
    product, other = f"{features},{width}", f"{width},{features}"
    if not transposed:
        product, other = other, product
    assert product in shapes and other not in shapes, shapes


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_narrow_weight_gradient_on_a_batch_sharded_mesh(axis_type):
    """Rows sharded over 4 devices: the narrow weight gradient contracts them (an explicit-axes
    mesh needs its output sharding). Same gradients as one device."""
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    mesh = jax.make_mesh((4,), ("data",), axis_types=(getattr(AxisType, axis_type),))
    x, params, c, _ = _narrow_dense_case(1024, 48, 24)
    grads = _dense_grads(24, c)
    expected = jax.jit(grads)(params, x)
    with jax.set_mesh(mesh):
        sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
        replicated = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        got = jax.jit(grads)(replicated, sharded)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5,
                                   atol=1e-5 * np.abs(np.asarray(b)).max())
