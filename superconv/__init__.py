"""superconv: super-convergence in JAX/Flax (Smith & Topin 2017, arXiv:1708.07120; Smith 2018, arXiv:1803.09820)."""

__version__ = '0.1.0'
