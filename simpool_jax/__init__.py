"""simpool-jax: SimPool attention pooling for JAX/Flax vision backbones.

Entry points: `simpool_jax.model.build_model` (backbone + pooler + head from a config),
`simpool_jax.models` (backbones), `simpool_jax.pooling` (poolers), `simpool_jax.convert`
(PyTorch weights -> our parameter dict).
"""

__version__ = "0.1.0"
