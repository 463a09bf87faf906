"""Command-line tools built on the library (run as `python -m simpool_jax.tools.<name>`)."""
