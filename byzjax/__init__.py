"""byzjax: a JAX simulator for Byzantine-robust distributed optimization."""

__version__ = "0.1.0"
