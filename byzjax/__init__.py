"""byzjax: a JAX simulator for Byzantine-robust distributed optimization."""
