"""Every registered component builds from its defaults through the config path and runs two rounds.

One case per registry entry (the parametrization IS the registry, so a new component gets a
case by existing); tiny data (6 honest workers, 4 features, 3 classes), f = 1.
"""

import numpy as np
import pytest

from byzjax import registry
from byzjax.app.config import parse_config
from byzjax.app.runner import execute
from byzjax.data import federated_classification, stack_seeds, synthetic_dataset

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


CASES = [(kind, name) for kind in registry.KINDS for name in sorted(registry.registry(kind))]


@pytest.mark.parametrize("kind, name", CASES, ids=[f"{k}-{n}" for k, n in CASES])
def test_every_registered_component_runs_two_rounds_from_its_defaults(kind, name):
    cfg = parse_config(smoke_config(kind, name))
    problem = cfg.problem.build(DATASET)
    data = stack_seeds([federated_classification(DATASET, N_HONEST, "iid", None, s) for s in cfg.seeds])
    runs, _, meta = execute(cfg, None, prepared=(DATASET, problem, data), show_progress=False)
    assert meta["complete"] and len(runs) == 1
    loss = np.asarray(runs[0][3].metrics["loss"])
    assert loss.shape == (cfg.rounds // registry.lookup("algorithm", cfg.algorithms[0].name).rounds_per_step,)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(runs[0][3].final_params))
