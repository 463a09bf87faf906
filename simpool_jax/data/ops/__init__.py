"""The registered pp ops. Importing this package registers them all (see `registry.OPS`)."""

from simpool_jax.data.ops import color, general, geometry, mix, multicrop, randaug  # noqa: F401
