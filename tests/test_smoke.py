"""Every registered component builds from its defaults through the config path and runs two rounds.

One case per registry entry (the parametrization IS the registry, so a new component gets a
case by existing); tiny data (6 honest workers, 4 features, 3 classes), f = 1. The cases of the
default components (TrMean, SignFlipping, DGD, LogisticRegression) are one config: it runs once
and each of them checks that run.
"""

import json
import os

import numpy as np
import pytest

from byzjax import registry
from byzjax.app.config import parse_config
from byzjax.app.runner import execute
from byzjax.data import federated_classification, stack_seeds, synthetic_dataset
from byzjax.images import synthetic_images

N_HONEST = 6  # n = 7 with f = 1: enough for every rule's requirement (Bulyan: n >= 4f + 3)
DATASET = synthetic_dataset(n_train=120, n_test=30, num_features=4, num_classes=3, separation=0.5)

DEFAULT = {"name": "smoke", "rounds": 2, "eval_every": 2, "seeds": 1,
           "data": {"source": "synthetic", "n_honest": N_HONEST},
           "byzantine": {"f": 1, "attack": "SignFlipping"}, "aggregator": {"name": "TrMean"},
           "algorithm": [{"name": "DGD"}]}


def smoke_config(kind: str, name: str) -> dict:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT.items()}
    if kind == "aggregator":
        raw["aggregator"] = {"name": name}
    elif kind == "preaggregator":
        raw["aggregator"] = {"name": "Average", "pre_aggs": [name]}
    elif kind == "attack":
        raw["byzantine"]["attack"] = name
    elif kind == "algorithm":
        raw["algorithm"] = [{"name": name}]
    elif kind == "problem":
        raw["problem"] = {"name": name}
    return raw


SLOW = {("problem", "ResNet18")}  # ~2 min to compile two rounds on 2 CPU cores
CASES = [pytest.param(kind, name, id=f"{kind}-{name}",
                      marks=pytest.mark.skipif((kind, name) in SLOW and not os.environ.get("BYZJAX_SLOW_TESTS"),
                                               reason="slow on CPU; BYZJAX_SLOW_TESTS=1 runs it"))
         for kind in registry.KINDS for name in sorted(registry.registry(kind))]


_RESULTS: dict[str, tuple] = {}  # resolved config (as JSON) -> (runs, meta): identical configs run once


def resolved(cfg) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True, default=str)


def run_smoke(cfg):
    """``execute`` of the parsed config ``cfg`` on the tiny data (a network problem: synthetic images
    of its own input shape), once per distinct resolved config."""
    key = resolved(cfg)
    if key not in _RESULTS:
        dataset = DATASET
        cls = registry.lookup("problem", cfg.problem.name)
        if cls.input_layout == "image":  # the model's own input shape, a handful of samples per worker
            dataset = synthetic_images(cls.sample_shape, n_train=4 * N_HONEST, n_test=8, num_classes=3)
        problem = cfg.problem.build(dataset)
        data = stack_seeds([federated_classification(dataset, N_HONEST, "iid", None, s) for s in cfg.seeds])
        runs, _, meta = execute(cfg, None, prepared=(dataset, problem, data), show_progress=False)
        _RESULTS[key] = (runs, meta)
    return _RESULTS[key]


def test_default_cases_share_one_config():
    """The cases of the default components are the same config (so one run serves them all)."""
    defaults = [("aggregator", "TrMean"), ("attack", "SignFlipping"), ("algorithm", "DGD"),
                ("problem", "LogisticRegression")]
    assert all(name in registry.registry(kind) for kind, name in defaults)
    assert len({resolved(parse_config(smoke_config(k, n))) for k, n in defaults}) == 1


@pytest.mark.parametrize("kind, name", CASES)
def test_every_registered_component_runs_two_rounds_from_its_defaults(kind, name):
    cfg = parse_config(smoke_config(kind, name))
    runs, meta = run_smoke(cfg)
    assert meta["complete"] and len(runs) == 1
    loss = np.asarray(runs[0][3].metrics["loss"])
    assert loss.shape == (cfg.rounds // registry.lookup("algorithm", cfg.algorithms[0].name).rounds_per_step,)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(runs[0][3].final_params))
