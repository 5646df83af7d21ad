"""``grid_signature``: what decides whether an output folder holds this grid's results (resume)."""
import dataclasses

from byzjax.app.config import parse_config
from byzjax.app.runner import grid_signature

RAW = {"name": "t", "seeds": 1, "rounds": 3, "data": {"source": "synthetic", "n_honest": 4},
       "problem": {"name": "LogisticRegression", "lam": 1e-3},
       "byzantine": {"f": [0, 1], "attack": ["SignFlipping"]}, "aggregator": {"name": "TrMean"},
       "algorithm": [{"name": "DGD", "lr": [0.1, 0.2]}, {"name": "AEG", "theta": 0.1, "gamma": 0.01, "prox": True}]}


def _signature_with_columns(cfg, change, monkeypatch):
    runs = [dataclasses.replace(r, columns=change(dict(r.columns))) for r in cfg.runs]
    with monkeypatch.context() as m:
        m.setattr(type(cfg), "runs", property(lambda self: runs))
        return grid_signature(cfg)


def test_algorithm_column_does_not_change_the_signature_other_columns_do(monkeypatch):
    cfg = parse_config(RAW)
    assert {r.columns["algorithm"] for r in cfg.runs} == {"DGD", "ProxAEG"}
    sig = grid_signature(cfg)
    # a folder written before the algorithm column existed still resumes
    assert _signature_with_columns(cfg, lambda c: {k: v for k, v in c.items() if k != "algorithm"}, monkeypatch) == sig
    assert _signature_with_columns(cfg, lambda c: c | {"lam": 0.5}, monkeypatch) != sig
    assert grid_signature(parse_config(RAW | {"rounds": 4})) != sig
    assert grid_signature(parse_config(RAW | {"max_batch": 2})) == sig
