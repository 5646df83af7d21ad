"""Tests run in float64 so that comparisons with NumPy references can be tight.

The suite compiles hundreds of small programs and runs each for milliseconds, so on CPU its time
is XLA's compile time, most of it LLVM's optimisation passes: the tests compile with LLVM's
optimisation level 0 (``--xla_backend_optimization_level=0``, about half the compile time; the
same HLO passes, no fast-math either way, so results agree with the default level to rounding).
An ``XLA_FLAGS`` that already sets the level is kept as it is.

Programs compiled twice (the same HLO from several tests) are compiled once: the session keeps
JAX's persistent compilation cache (``byzjax.sweep.use_compilation_cache``) in a temporary folder,
removed at the end, or in ``BYZJAX_CACHE_DIR`` if set (kept: a later session reads it back). The
terminal summary says how many compilations it answered.

Test files run in parallel worker processes (pytest-xdist, ``-n auto --dist loadfile`` in
pyproject.toml: a file's tests and its module fixtures stay in one worker). A test is mostly a
single-threaded compilation, so workers overlap where one process would wait on LLVM. Workers are
as many as the CPU cores, at most ``MAX_WORKERS`` (memory: a worker holds up to ~3 GB). The
temporary cache folder is made before the workers start and shared by them, and the summary adds
up their counts. ``pytest -n 0`` runs in one process.
"""

import atexit
import os
import shutil
import tempfile

_FLAGS = os.environ.get("XLA_FLAGS", "")
if "--xla_backend_optimization_level" not in _FLAGS:  # read when the backend starts: before any computation
    os.environ["XLA_FLAGS"] = f"{_FLAGS} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from byzjax.sweep import CACHE_DIR_ENV, use_compilation_cache  # noqa: E402

jax.config.update("jax_enable_x64", True)

MAX_WORKERS = 4

if not os.environ.get(CACHE_DIR_ENV):  # else byzjax.sweep already uses it
    # made in the first process (xdist's controller, before it starts the workers, which inherit the
    # variable) and removed when that process ends, after its workers
    os.environ[CACHE_DIR_ENV] = _SESSION_CACHE = tempfile.mkdtemp(prefix="byzjax-test-jax-cache-")
    atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)
    use_compilation_cache(_SESSION_CACHE)

_CACHE_EVENTS = {"/jax/compilation_cache/compile_requests_use_cache": 0, "/jax/compilation_cache/cache_hits": 0}


def _count(event: str, **_) -> None:
    if event in _CACHE_EVENTS:
        _CACHE_EVENTS[event] += 1


jax.monitoring.register_event_listener(_count)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)  # set on an xdist worker only
    if workeroutput is not None:
        workeroutput["compilation_cache"] = list(_CACHE_EVENTS.values())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """On xdist's controller: a worker's compilation-cache counts, added to this process's."""
    for event, n in zip(_CACHE_EVENTS, node.workeroutput.get("compilation_cache", (0, 0))):
        _CACHE_EVENTS[event] += n


def pytest_terminal_summary(terminalreporter):
    asked, hits = _CACHE_EVENTS.values()
    terminalreporter.write_line(f"persistent compilation cache: {hits} of {asked} compilations read back")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
