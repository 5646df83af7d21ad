"""Tests run in float64 so that comparisons with NumPy references can be tight.

The suite compiles hundreds of small programs and runs each for milliseconds, so on CPU its time
is XLA's compile time, most of it LLVM's optimisation passes: the tests compile with LLVM's
optimisation level 0 (``--xla_backend_optimization_level=0``, about half the compile time; the
same HLO passes, no fast-math either way, so results agree with the default level to rounding).
An ``XLA_FLAGS`` that already sets the level is kept as it is.
"""

import os

_FLAGS = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _FLAGS:  # read when the backend starts: before any computation
    os.environ["XLA_FLAGS"] = f"{_FLAGS} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
