"""ByzFL's benchmark ``config.json`` -> a byzjax grid (``byzjax run --byzfl config.json``).

ByzFL's benchmark (github.com/LPD-EPFL/byzfl, ``byzfl/benchmark/benchmark.py``) expands its
config with ``generate_all_combinations``: every list anywhere in the file is a sweep (a list of
tables expands each table), except ``pre_aggregators`` and ``milestones``, which are one value
each (a list of pre-aggregator lists sweeps pipelines). Then ``run_benchmark`` sets ``tolerated_f``
to ``f`` where the file has no ``tolerated_f`` (``set_tolerated_f_equal_to_real_f``), else drops the
combinations with ``tolerated_f < f`` (``remove_real_greater_declared``, which keeps
``tolerated_f >= f``); the rules' and pre-aggregators' ``f`` is ``tolerated_f``, and every combination
is run for ``nb_training_seeds`` x ``nb_data_distribution_seeds`` seeds. ``translate`` maps such a
file onto byzjax's config (the dictionary ``parse_config`` reads), whose grid is the same product:
every swept ByzFL field is a byzjax sweep, the dropped pairs are dropped too (``[byzantine]
drop_tolerated_below_f``; ``load_byzfl`` notes each dropped group), every field byzjax cannot honour
is refused in one line naming it, and every field mapped differently is reported as one
``byzfl: ...`` note.

Two layouts are read: ByzFL's (``model.learning_rate``, ``honest_clients.momentum`` /
``weight_decay``; DSGD = server SGD on the clients' momenta) and the paper authors' fork
(github.com/renaudgaucher/Inexact-gradient-acceleration-and-similarity, arXiv 2602.03329): a list
of ``training_algorithm`` tables with their own ``learning_rate`` and ``momentum``, DSGD (server
Nesterov momentum) = D-NAG, moDSGD (client momentum) = D-GD, FedProxyProx = PIGS.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from byzjax import registry
from byzjax._validation import ConfigError

NOTE = "byzfl: "
TOP = ("benchmark_config", "model", "aggregator", "pre_aggregators", "honest_clients", "attack",
       "evaluation_and_results")
BENCHMARK = ("training_algorithm", "nb_steps", "device", "dtype", "training_seed", "nb_training_seeds",
             "data_distribution_seed", "nb_data_distribution_seeds", "nb_honest_clients", "f", "tolerated_f",
             "set_honest_clients_as_clients", "nb_workers", "size_train_set", "data_distribution")
MODEL = ("name", "dataset_name", "nb_labels", "loss", "learning_rate", "learning_rate_decay", "milestones",
         "optimizer_name", "weight_decay")
HONEST = ("momentum", "weight_decay", "batch_size")
EVALUATION = ("evaluation_delta", "batch_size_evaluation", "evaluate_on_test", "store_per_client_metrics",
              "store_models", "data_folder", "results_directory")
FORK_PARAMS = ("optimizer_name", "optimizer_parameters", "momentum", "learning_rate", "learning_rate_decay",
               "milestones", "prox_step_size")
DISTRIBUTIONS = {"iid": "iid", "dirichlet_niid": "dirichlet", "gamma_similarity_niid": "gamma_similarity",
                 "extreme_niid": "extreme"}
# ByzFL's dataset names: (torchvision's folder under data_folder, normalisation of ByzFL's transform)
DATASETS = {"mnist": ("MNIST/raw", "mnist"), "fashionmnist": ("FashionMNIST/raw", [0.0, 1.0]),
            "cifar10": ("cifar-10-batches-py", [[0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]])}
MODELS = {"logreg_mnist": "LogisticRegression"}  # other names: byzjax's problem of the same name


class Translation(NamedTuple):
    """A ByzFL config read as byzjax's: the config dictionary, the notes, the results folder."""

    config: dict  # what ``byzjax.app.config.parse_config`` reads
    notes: list[str]  # one line per field mapped differently, each starting with "byzfl: "
    results_directory: str | None  # evaluation_and_results.results_directory (the default --out)


# ----------------------------------------------------------------------------------------------
# Values: a list is a sweep; fields byzjax cannot sweep take one value.


def _fail(field: str, message: str) -> ConfigError:
    return ConfigError(f"byzfl config: {field}: {message}")


def _values(field: str, value) -> list:
    """The values a field sweeps (a scalar is one value); an empty list is refused."""
    if isinstance(value, list):
        if not value:
            raise _fail(field, "is an empty list (ByzFL would run nothing)")
        return list(value)
    return [value]


def _one(field: str, value, why: str = "byzjax runs one value per grid"):
    """The single value of a field byzjax cannot sweep (a one-element list is that value)."""
    values = _values(field, value)
    if len(values) > 1:
        raise _fail(field, f"is a list of {len(values)} values {values!r} (a ByzFL sweep); {why}: give one value")
    return values[0]


def _table(field: str, value, allowed) -> dict:
    if not isinstance(value, dict):
        raise _fail(field, f"must be a JSON object, got {value!r}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise _fail(f"{field}.{unknown[0]}", f"is not a ByzFL benchmark field byzjax supports "
                                             f"(value {value[unknown[0]]!r}; supported here: {', '.join(allowed)})")
    return value


def _tables(field: str, value) -> list[tuple[str, dict]]:
    """A table or a list of tables (a sweep), each with ``name`` and optional ``parameters``."""
    out = []
    entries = value if isinstance(value, list) else [value]
    if not entries:
        raise _fail(field, "is an empty list (ByzFL would run nothing)")
    for i, entry in enumerate(entries):
        where = f"{field}[{i}]" if isinstance(value, list) else field
        entry = _table(where, entry, ("name", "parameters"))
        if not isinstance(entry.get("name"), str):
            raise _fail(f"{where}.name", f"must be a name, got {entry.get('name')!r}")
        params = entry.get("parameters", {})
        if not isinstance(params, dict):
            raise _fail(f"{where}.parameters", f"must be a JSON object, got {params!r}")
        out.append((where, entry))
    return out


def _number(field: str, value, *, low=None, integer=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (not integer or isinstance(value, int))
    if not ok or (low is not None and value < low):
        what = "an integer" if integer else "a number"
        raise _fail(field, f"must be {what}{f' >= {low}' if low is not None else ''}, got {value!r}")
    return value


def _component(kind: str, field: str, name: str, params: dict, notes: list[str], sweep: bool = True) -> dict:
    """``{"name": ..., **params}`` for byzjax's ``kind`` registry; a parameter byzjax sets itself (the
    rules' and attacks' ``f``) is dropped with a note, an unknown name or parameter is refused."""
    try:
        canonical = registry.canonical(kind, name)
    except ConfigError as err:
        raise _fail(f"{field}.name", str(err)) from None
    allowed = registry.config_params(registry.lookup(kind, canonical))
    out = {"name": name}
    for key, value in params.items():
        if key == "f" or key in ("aggregator_info", "pre_agg_list"):
            notes.append(f"{NOTE}{field}.parameters.{key} is ignored: ByzFL and byzjax set it from f / tolerated_f")
            continue
        if key not in allowed:
            raise _fail(f"{field}.parameters.{key}", f"{kind} {canonical} has no parameter {key!r} in byzjax "
                                                     f"(allowed: {', '.join(sorted(allowed)) or 'none'})")
        if isinstance(value, list) and not sweep:
            raise _fail(f"{field}.parameters.{key}", f"is a list {value!r}, which ByzFL does not sweep inside "
                                                     "pre_aggregators (it passes the list as it is): give one value")
        out[key] = _values(f"{field}.parameters.{key}", value) if isinstance(value, list) else value
    return out


# ----------------------------------------------------------------------------------------------
# Sections.


def _algorithms(bench: dict, model: dict, honest: dict, notes: list[str]) -> tuple[list[dict], list, str]:
    """``([[algorithm]] tables, [workers] momentum values, layout)`` of ``training_algorithm``."""
    entries = _tables("benchmark_config.training_algorithm",
                      bench.get("training_algorithm", {"name": "DSGD", "parameters": {}}))
    fork = any(set(e.get("parameters", {})) & set(FORK_PARAMS) or e["name"] in ("moDSGD", "FedProxyProx")
               for _, e in entries) or "weight_decay" in model
    for where, entry in entries:
        if entry["name"] == "FedAvg":
            raise _fail(f"{where}.name", "FedAvg (client sampling, local steps) is not read from ByzFL configs; "
                                         "write a byzjax TOML with [workers] local_steps and the FedAvg algorithm")
        if entry["name"] not in ("DSGD", "moDSGD", "FedProxyProx"):
            raise _fail(f"{where}.name", f"unknown ByzFL training algorithm {entry['name']!r} "
                                         "(supported: DSGD, moDSGD, FedProxyProx)")
    if not fork:
        return _algorithms_byzfl(entries, model, honest, notes) + ("byzfl",)
    for key in ("learning_rate", "optimizer_name", "learning_rate_decay", "milestones"):
        if key in model:
            _one(f"model.{key}", model[key], "this layout reads it from training_algorithm.parameters")
            notes.append(f"{NOTE}model.{key} is ignored: the training_algorithm tables carry their own")
    for key in ("momentum", "weight_decay"):
        if key in honest:
            _one(f"honest_clients.{key}", honest[key], "this layout does not read it")
            notes.append(f"{NOTE}honest_clients.{key} is ignored: this layout reads "
                         f"{'training_algorithm.parameters.momentum' if key == 'momentum' else 'model.weight_decay'}")
    tables, client_momenta = [], []
    for where, entry in entries:
        name, p = entry["name"], entry.get("parameters", {})
        for key in p:
            if key not in FORK_PARAMS and key not in ("proportion_selected_clients", "local_steps_per_client"):
                raise _fail(f"{where}.parameters.{key}", f"is not a parameter of {name} byzjax supports "
                                                         f"(value {p[key]!r})")
            if key in ("proportion_selected_clients", "local_steps_per_client"):
                raise _fail(f"{where}.parameters.{key}", "is a FedAvg parameter: FedAvg is not read from ByzFL configs")
        optimizer = _one(f"{where}.parameters.optimizer_name", p.get("optimizer_name", "SGD"))
        if optimizer != "SGD":
            raise _fail(f"{where}.parameters.optimizer_name", f"{optimizer!r} is not supported (only 'SGD')")
        _schedule(f"{where}.parameters", p)
        opt = p.get("optimizer_parameters", {})
        if not isinstance(opt, dict) or set(opt) - {"nesterov"}:
            raise _fail(f"{where}.parameters.optimizer_parameters", f"only 'nesterov' is supported, got {opt!r}")
        nesterov = _one(f"{where}.parameters.optimizer_parameters.nesterov", opt.get("nesterov", False))
        if not isinstance(nesterov, bool):
            raise _fail(f"{where}.parameters.optimizer_parameters.nesterov", f"must be true or false, got {nesterov!r}")
        lrs = [_number(f"{where}.parameters.learning_rate", v, low=0)
               for v in _values(f"{where}.parameters.learning_rate", p.get("learning_rate", 0.1))]
        momenta = [_number(f"{where}.parameters.momentum", v, low=0)
                   for v in _values(f"{where}.parameters.momentum", p.get("momentum", 0.9))]
        if name == "DSGD":
            if nesterov:
                tables.append({"name": "DNAG", "lr": lrs, "momentum": momenta})
                notes.append(f"{NOTE}{where} DSGD (server SGD, nesterov momentum) -> D-NAG (DNAG lr, momentum)")
            elif all(m == 0 for m in momenta):
                tables.append({"name": "DGD", "lr": lrs})
                notes.append(f"{NOTE}{where} DSGD without momentum -> D-GD (DGD lr)")
            else:
                tables.append({"name": "FedAvg", "lr": lrs, "momentum": momenta})
                notes.append(f"{NOTE}{where} DSGD (server heavy-ball momentum) -> FedAvg with one local step "
                             "(server SGD with momentum on the aggregated gradients)")
            client_momenta.append((0.0,))
        elif name == "moDSGD":
            tables.append({"name": "DGD", "lr": lrs})
            client_momenta.append(tuple(momenta))
            notes.append(f"{NOTE}{where} moDSGD -> D-GD (DGD lr); its momentum is the clients' "
                         "([workers] momentum)")
        else:  # FedProxyProx: the prox step is prox_step_size (default: learning_rate); momentum unused
            if len(momenta) > 1:
                raise _fail(f"{where}.parameters.momentum", f"FedProxyProx does not use momentum: the list "
                                                            f"{momenta!r} would repeat the same run; give one value")
            if "prox_step_size" in p:
                _one(f"{where}.parameters.learning_rate", p.get("learning_rate", 0.1),
                     "FedProxyProx uses prox_step_size, so the learning_rate sweep would repeat the same run")
                etas = [_number(f"{where}.parameters.prox_step_size", v, low=0)
                        for v in _values(f"{where}.parameters.prox_step_size", p["prox_step_size"])]
            else:
                etas = lrs
            tables.append({"name": "PIGS", "eta": etas})
            client_momenta.append((0.0,))
            notes.append(f"{NOTE}{where} FedProxyProx -> PIGS (eta = "
                         f"{'prox_step_size' if 'prox_step_size' in p else 'learning_rate'}; momentum unused)")
    momenta = set(client_momenta)
    if len(momenta) > 1:
        raise _fail("benchmark_config.training_algorithm", "moDSGD's client momentum must be the same for every "
                                                           "algorithm of the grid (byzjax's [workers] momentum "
                                                           f"applies to all of them), got {sorted(momenta)}")
    return tables, list(momenta.pop()), "fork"


def _algorithms_byzfl(entries, model: dict, honest: dict, notes: list[str]) -> tuple[list[dict], list]:
    """ByzFL's own layout: DSGD = server SGD (lr = model.learning_rate) on the honest clients' momenta."""
    for where, entry in entries:
        if entry.get("parameters"):
            key = next(iter(entry["parameters"]))
            raise _fail(f"{where}.parameters.{key}", f"is not a parameter of DSGD (value {entry['parameters'][key]!r})")
    optimizer = _one("model.optimizer_name", model.get("optimizer_name", "SGD"))
    if optimizer != "SGD":
        raise _fail("model.optimizer_name", f"{optimizer!r} is not supported (only 'SGD')")
    _schedule("model", model)
    lrs = [_number("model.learning_rate", v, low=0) for v in _values("model.learning_rate",
                                                                      model.get("learning_rate", 0.1))]
    momenta = [_number("honest_clients.momentum", v, low=0)
               for v in _values("honest_clients.momentum", honest.get("momentum", 0.9))]
    notes.append(f"{NOTE}DSGD (server SGD on the honest clients' momenta) -> D-GD (DGD lr = model.learning_rate) "
                 f"with [workers] momentum = honest_clients.momentum {momenta}"
                 f"{' (ByzFL default)' if 'momentum' not in honest else ''}")
    return [{"name": "DGD", "lr": lrs} for _ in entries], momenta


def _schedule(field: str, table: dict) -> None:
    decay = _one(f"{field}.learning_rate_decay", table.get("learning_rate_decay", 1.0))
    milestones = table.get("milestones", [])
    if not isinstance(milestones, list):
        raise _fail(f"{field}.milestones", f"must be a list of steps, got {milestones!r}")
    if milestones and decay != 1.0:
        raise _fail(f"{field}.milestones", f"step-size schedules (decay {decay!r} at {milestones!r}) are not read "
                                           "from ByzFL configs")


def _dataset(model: dict) -> str:
    name = _one("model.dataset_name", model.get("dataset_name", "mnist"))
    if name not in DATASETS:
        raise _fail("model.dataset_name", f"{name!r} is not supported (supported: {', '.join(DATASETS)})")
    labels = _one("model.nb_labels", model.get("nb_labels", 10))
    if labels != 10:
        raise _fail("model.nb_labels", f"{name} has 10 classes, got {labels!r}")
    return name


def _source(name: str, folder: Path, notes: list[str]) -> tuple[str, object]:
    sub, normalization = DATASETS[name]
    where = folder / sub
    if name == "cifar10":
        notes.append(f"{NOTE}cifar10 -> cifar10:{where} (no random crops or flips; ByzFL's per-channel mean/std)")
        return f"cifar10:{where}", normalization
    if (where / "train-images-idx3-ubyte").exists() or (where / "train-images-idx3-ubyte.gz").exists():
        notes.append(f"{NOTE}{name} -> the IDX files of {where}")
        return str(where), normalization
    if name == "mnist":
        notes.append(f"{NOTE}mnist -> Fashion-MNIST (the Debian package; MNIST is not in {where}): "
                     "give --data DIR for a folder of MNIST's IDX files; normalised with MNIST's (0.1307, 0.3081) "
                     "as ByzFL's transform")
    else:
        notes.append(f"{NOTE}fashionmnist -> Fashion-MNIST (the Debian package; not in {where}); pixels in "
                     "[0, 1] as ByzFL's ToTensor, without its random horizontal flips")
    return "fashion-mnist", normalization


def _distributions(bench: dict, notes: list[str]) -> dict:
    """[data] split / alpha / gamma of ``data_distribution`` (each table sweeps its own parameter list)."""
    field = "benchmark_config.data_distribution"
    raw = bench.get("data_distribution", {"name": "iid", "distribution_parameter": 1.0})
    entries = raw if isinstance(raw, list) else [raw]
    if not entries:
        raise _fail(field, "is an empty list (ByzFL would run nothing)")
    params: dict[str, list] = {}  # split -> its parameter values, in the order given
    for i, entry in enumerate(entries):
        where = f"{field}[{i}]" if isinstance(raw, list) else field
        entry = _table(where, entry, ("name", "distribution_parameter"))
        name = entry.get("name")
        if name not in DISTRIBUTIONS:
            raise _fail(f"{where}.name", f"unknown distribution {name!r} (supported: {', '.join(DISTRIBUTIONS)})")
        split = DISTRIBUTIONS[name]
        # ByzFL reads a null parameter as its default 1.0
        values = [1.0 if v is None else v for v in _values(f"{where}.distribution_parameter",
                                                            entry.get("distribution_parameter", 1.0))]
        if split in ("iid", "extreme"):
            _one(f"{where}.distribution_parameter", values, f"{name} takes no parameter, so a sweep would repeat "
                                                            "the same run")
            if split in params:
                raise _fail(f"{where}.name", f"{name} is listed twice (ByzFL would repeat the same runs)")
            params[split] = []
            continue
        previous = params.setdefault(split, [])
        for v in values:
            _number(f"{where}.distribution_parameter", v, low=0)
            if v in previous:
                raise _fail(f"{where}.distribution_parameter", f"{name} lists {v!r} twice (ByzFL would repeat the "
                                                               "same runs)")
            previous.append(v)
    splits = list(params)
    out = {"split": splits if len(splits) > 1 else splits[0]}
    if params.get("dirichlet"):
        out["alpha"] = params["dirichlet"]
    if params.get("gamma_similarity"):
        out["gamma"] = params["gamma_similarity"]
    return out


def _seeds(bench: dict, notes: list[str]) -> list[int]:
    values = {}
    for key, default in (("training_seed", 0), ("nb_training_seeds", 1), ("data_distribution_seed", 0),
                         ("nb_data_distribution_seeds", 1)):
        values[key] = _number(f"benchmark_config.{key}", _one(f"benchmark_config.{key}", bench.get(key, default)),
                              low=1 if key.startswith("nb_") else 0, integer=True)
    n_tr, n_dd = values["nb_training_seeds"], values["nb_data_distribution_seeds"]
    if n_tr > 1 and n_dd > 1:
        raise _fail("benchmark_config.nb_data_distribution_seeds", "byzjax's seed sets the data split and the "
                                                                   "initialisation together: give nb_training_seeds "
                                                                   "or nb_data_distribution_seeds > 1, not both")
    first = values["training_seed"] if n_dd == 1 else values["data_distribution_seed"]
    seeds = list(range(first, first + max(n_tr, n_dd)))
    if seeds != [0] or "training_seed" in bench or "data_distribution_seed" in bench:
        notes.append(f"{NOTE}seeds {seeds}: each byzjax seed draws the data split and the initialisation "
                     "(ByzFL's training_seed and data_distribution_seed apart)")
    return seeds


def _byzantine(bench: dict, attacks: list[dict], notes: list[str]) -> dict:
    fs = [_number("benchmark_config.f", v, low=0, integer=True) for v in _values("benchmark_config.f", bench.get("f", 0))]
    out = {"f": fs, "attack": attacks}
    if "tolerated_f" in bench:
        tolerated = [_number("benchmark_config.tolerated_f", v, low=0, integer=True)
                     for v in _values("benchmark_config.tolerated_f", bench["tolerated_f"])]
        if all(t < f for f in fs for t in tolerated):
            raise _fail("benchmark_config.tolerated_f", f"{tolerated} with f {fs}: every pair has tolerated_f < f, "
                                                        "which ByzFL drops (remove_real_greater_declared): nothing is "
                                                        "left to run; give a tolerated_f >= some f")
        out["tolerated_f"] = tolerated
        if any(t < f for f in fs for t in tolerated):
            out["drop_tolerated_below_f"] = True  # ByzFL's filter; load_byzfl notes each dropped group
    if 0 in fs and len(attacks) > 1:
        notes.append(f"{NOTE}f = 0: one run per configuration, not one per attack (ByzFL repeats the same "
                     "attack-free run for each attack)")
    return out


def translate(byzfl: dict, base: str | os.PathLike = ".") -> Translation:
    """ByzFL benchmark config (the parsed JSON) -> ``Translation`` (byzjax's config dictionary, the
    notes, the results folder); ``base`` is the folder relative paths (``data_folder``) are read from."""
    notes: list[str] = []
    if not isinstance(byzfl, dict):
        raise ConfigError(f"byzfl config: must be a JSON object, got {type(byzfl).__name__}")
    _table("config", byzfl, TOP)
    bench = _table("benchmark_config", byzfl.get("benchmark_config", {}), BENCHMARK)
    model = _table("model", byzfl.get("model", {}), MODEL)
    honest = _table("honest_clients", byzfl.get("honest_clients", {}), HONEST)
    evaluation = _table("evaluation_and_results", byzfl.get("evaluation_and_results", {}), EVALUATION)

    algorithms, client_momenta, layout = _algorithms(bench, model, honest, notes)
    # problem: the model and its L2 term
    model_name = _one("model.name", model.get("name", "cnn_mnist"))
    problem = MODELS.get(model_name, model_name)
    try:
        registry.canonical("problem", problem)
    except ConfigError:
        raise _fail("model.name", f"{model_name!r} is not a byzjax model (supported: "
                                  f"{', '.join(sorted(set(registry.registry('problem')) - {'LogisticRegression'}))})"
                    ) from None
    if problem != model_name:
        notes.append(f"{NOTE}model {model_name} -> {problem} (the same softmax regression, PyTorch's initialisation)")
    loss = _one("model.loss", model.get("loss", "NLLLoss"))
    if loss not in ("NLLLoss", "CrossEntropyLoss"):
        raise _fail("model.loss", f"{loss!r} is not supported (NLLLoss or CrossEntropyLoss: the cross-entropy)")
    wd_field = "model.weight_decay" if layout == "fork" else "honest_clients.weight_decay"
    wd = _one(wd_field, (model if layout == "fork" else honest).get("weight_decay", 1e-4),
              "byzjax's lam is one value per grid")
    _number(wd_field, wd, low=0)
    notes.append(f"{NOTE}{wd_field} {wd!r} -> [problem] lam, the term (lam/2)||x||^2 of every local loss"
                 + (" (ByzFL adds it in the server's optimizer, after aggregation)" if layout == "byzfl" else ""))

    # data
    folder = Path(_one("evaluation_and_results.data_folder", evaluation.get("data_folder", "./data")))
    folder = folder if folder.is_absolute() else Path(base) / folder
    source, normalization = _source(_dataset(model), folder, notes)
    n_honest = [_number("benchmark_config.nb_honest_clients", v, low=1, integer=True)
                for v in _values("benchmark_config.nb_honest_clients", bench.get("nb_honest_clients", 10))]
    fs = _values("benchmark_config.f", bench.get("f", 0))
    if _one("benchmark_config.set_honest_clients_as_clients", bench.get("set_honest_clients_as_clients", False)):
        f = _one("benchmark_config.f", fs, "with set_honest_clients_as_clients the honest count depends on f")
        n_honest = [n - f for n in n_honest]
        notes.append(f"{NOTE}set_honest_clients_as_clients: n_honest = nb_honest_clients - f = {n_honest}")
    if "nb_workers" in bench:
        notes.append(f"{NOTE}benchmark_config.nb_workers is ignored: n = nb_honest_clients + f, as ByzFL computes it")
    train = _one("benchmark_config.size_train_set", bench.get("size_train_set", 0.8))
    if not (isinstance(train, (int, float)) and not isinstance(train, bool) and 0 < train < 1):
        raise _fail("benchmark_config.size_train_set", f"must be in (0, 1) (byzjax keeps a validation part), "
                                                       f"got {train!r}")
    data = {"source": source, "n_honest": n_honest if len(n_honest) > 1 else n_honest[0],
            "normalization": normalization, "val_fraction": round(1.0 - train, 12)} | _distributions(bench, notes)

    # workers: what the honest clients send
    workers = {}
    if any(m != 0 for m in client_momenta):
        workers["momentum"] = client_momenta
    batches = [_number("honest_clients.batch_size", v, low=0, integer=True)
               for v in _values("honest_clients.batch_size", honest.get("batch_size", 32))]
    if 0 in batches and len(batches) > 1:
        raise _fail("honest_clients.batch_size", f"mixes 0 (full batch) with mini-batch sizes {batches}: give one or "
                                                 "the other")
    if 0 not in batches:
        workers["batch_size"] = batches
        if "batch_size" not in honest:
            notes.append(f"{NOTE}honest_clients.batch_size: ByzFL's default 32 (mini-batch gradients)")
    else:
        notes.append(f"{NOTE}honest_clients.batch_size 0 -> full-batch gradients")

    # aggregation pipelines: every aggregator x every pre-aggregator list
    aggregators = _tables("aggregator", byzfl.get("aggregator", {"name": "Average", "parameters": {}}))
    pre_raw = byzfl.get("pre_aggregators", [])
    if not isinstance(pre_raw, list):
        raise _fail("pre_aggregators", f"must be a list of pre-aggregators, got {pre_raw!r}")
    pipelines = pre_raw if pre_raw and isinstance(pre_raw[0], list) else [pre_raw]
    pre_tables = []
    for i, pipeline in enumerate(pipelines):
        where = f"pre_aggregators[{i}]" if pipelines is pre_raw else "pre_aggregators"
        if not isinstance(pipeline, list):
            raise _fail(where, f"must be a list of pre-aggregators, got {pipeline!r}")
        pre_tables.append([_component("preaggregator", f"{where}[{j}]", e["name"], e.get("parameters", {}), notes,
                                      sweep=False)
                           for j, (_, e) in enumerate(_tables(where, pipeline))] if pipeline else [])
    agg_tables = [_component("aggregator", w, e["name"], e.get("parameters", {}), notes) for w, e in aggregators]
    aggregator = [a | {"pre_aggs": pre} for pre in pre_tables for a in agg_tables]
    attacks = [_component("attack", w, e["name"], e.get("parameters", {}), notes)
               for w, e in _tables("attack", byzfl.get("attack", {"name": "NoAttack", "parameters": {}}))]

    # run length, evaluation, precision
    rounds = _number("benchmark_config.nb_steps", _one("benchmark_config.nb_steps", bench.get("nb_steps", 1000)),
                     low=1, integer=True)
    delta = _number("evaluation_and_results.evaluation_delta",
                    _one("evaluation_and_results.evaluation_delta", evaluation.get("evaluation_delta", 50)),
                    low=1, integer=True)
    notes.append(f"{NOTE}evaluation_delta {delta} -> eval_every {delta} (validation and test accuracy every "
                 f"{delta} rounds and at the end)")
    dtype = _one("benchmark_config.dtype", bench.get("dtype", "float32"))
    if dtype not in ("float32", "float64"):
        raise _fail("benchmark_config.dtype", f"must be 'float32' or 'float64', got {dtype!r}")
    if "device" in bench:
        notes.append(f"{NOTE}benchmark_config.device {bench['device']!r} is ignored: byzjax runs on every device "
                     "JAX sees (--devices N)")
    if _one("evaluation_and_results.store_models", evaluation.get("store_models", False)):
        raise _fail("evaluation_and_results.store_models", "true is not supported (byzjax stores metrics, not models)")
    if _one("evaluation_and_results.store_per_client_metrics", evaluation.get("store_per_client_metrics", True)):
        notes.append(f"{NOTE}store_per_client_metrics: byzjax logs the honest workers' mean loss and gradient, not "
                     "each client's")
    if not _one("evaluation_and_results.evaluate_on_test", evaluation.get("evaluate_on_test", True)):
        notes.append(f"{NOTE}evaluate_on_test false: byzjax evaluates on the test set too")
    if "batch_size_evaluation" in evaluation:
        notes.append(f"{NOTE}batch_size_evaluation is ignored (byzjax evaluates the whole set at once)")
    results = evaluation.get("results_directory", "./results")
    config = {"name": Path(str(results)).name or "byzfl", "seeds": _seeds(bench, notes), "rounds": rounds,
              "eval_every": delta, "x64": dtype == "float64", "data": data,
              "problem": {"name": problem, "lam": wd}, "byzantine": _byzantine(bench, attacks, notes),
              "aggregator": aggregator, "algorithm": algorithms}
    if workers:
        config["workers"] = workers
    return Translation(config, notes, _one("evaluation_and_results.results_directory", results))


def dropped_notes(grid) -> list[str]:
    """One note per ``(f, tolerated_f)`` group of runs the grid leaves out (``byzjax.app.config.dropped_runs``:
    ByzFL's ``remove_real_greater_declared`` in ``run_benchmark``, byzfl/benchmark/benchmark.py, skips
    the combinations with ``tolerated_f < f``), in grid order:
    ``byzfl: dropped N runs with tolerated_f=1 < f=5 (ByzFL skips them)``."""
    from collections import Counter

    from byzjax.app.config import dropped_runs

    groups = Counter((r.tolerated_f, r.f) for r in dropped_runs(grid))
    return [f"{NOTE}dropped {n} runs with tolerated_f={t} < f={f} (ByzFL skips them)" for (t, f), n in groups.items()]


def load_byzfl(path: str | os.PathLike):
    """Read a ByzFL benchmark ``config.json``: ``(GridSpec, Translation)``; every error is one line
    naming the file and the field. The grid's ``raw`` (recorded as ``as_written``) is the JSON as given.
    The notes end with one line per group of runs dropped as ByzFL drops them (``dropped_notes``)."""
    import dataclasses

    from byzjax.app.config import parse_config, read_config_text

    path = Path(path)
    text = read_config_text(path, "ByzFL config", "JSON")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: malformed JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    try:
        translation = translate(raw, base=path.parent)
        grid = parse_config(translation.config, base=path.parent)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    translation = translation._replace(notes=translation.notes + dropped_notes(grid))
    return dataclasses.replace(grid, raw=raw), translation
