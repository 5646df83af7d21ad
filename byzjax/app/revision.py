"""The authors' revised protocol (arXiv 2602.03329, the experiments of its revision), as one
command: ``byzjax reproduce revision``.

40 honest workers plus ``f`` in {0, 1, 5, 10, 20} Byzantine ones running Optimal ALIE, against the
authors' "Huber" aggregator (``AdaptiveClipping``, their f = 0 index by default); logistic
regression with weight decay 0.01 (``lam``), full-batch gradients, 5000 communication rounds,
accuracy every 100; heterogeneity iid and Dirichlet alpha in {0.1, 1, 5}. Per heterogeneity level:

1. stage 1, at f = 0: D-GD's lr over {0.05, 0.1, 0.2, 0.5, 1.0};
2. stage 2, at f = 0, around the best D-GD lr ``lr*``: PIGS eta = lr* x {5, 10, 20, 50, 100}, AEG
   theta = lr* x {0.25, 0.5, 1, 2}, prox-AEG theta = lr* x {0.2, 0.5, 1, 2, 5, 10, 20} (AEG's gamma
   = the weight decay, the authors' stand-in for mu);
3. stage 3: every method at its step, for every f >= 1 (one program per method: ``max_f`` rows, the
   absent ones masked); the f = 0 runs are the tuning runs of the chosen steps.

Each step is chosen by ``byzjax.app.selection.lowest_auc`` (lowest mean training loss over the
rounds, mean over seeds, non-finite curves discarded). Every stage is stored under ``OUT/stages/``
(``byzjax.app.reproduce.save_stage``) and reloaded on a rerun, so the protocol resumes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from byzjax.app.files import warn, write_json
from byzjax.app.reproduce import StageCache
from byzjax.app.results import write_csv, write_results
from byzjax.app.runner import environment
from byzjax.app.selection import lowest_auc
from byzjax.metrics import COUNTER

DGD_LRS = [0.05, 0.1, 0.2, 0.5, 1.0]
MULTIPLIERS = {"PIGS": [5, 10, 20, 50, 100], "AEG": [0.25, 0.5, 1, 2], "prox-AEG": [0.2, 0.5, 1, 2, 5, 10, 20]}
FAMILIES = ("D-GD", "PIGS", "AEG", "prox-AEG")
COLORS = {"D-GD": "tab:blue", "PIGS": "tab:green", "AEG": "tab:orange", "prox-AEG": "tab:red"}


def settings(quick: bool) -> dict:
    """The protocol's grid, or its ``--quick`` form for CI (10 honest workers, f in {0, 1}, Dirichlet(1)
    only, 8 rounds, 2 seeds, two candidate steps per method, inner solves capped at 20 iterations;
    the same stages and programs)."""
    s = {"n_honest": 40, "fs": [0, 1, 5, 10, 20], "levels": [("iid", None), ("dirichlet", 0.1), ("dirichlet", 1.0),
                                                              ("dirichlet", 5.0)],
         "lam": 0.01, "rounds": 5000, "eval_every": 100, "seeds": 5, "attack": "Optimal_ALittleIsEnough",
         "inner_max_iter": 200, "dgd_lrs": DGD_LRS, "multipliers": MULTIPLIERS}
    if quick:
        s |= {"n_honest": 10, "fs": [0, 1], "levels": [("dirichlet", 1.0)], "rounds": 8, "eval_every": 4, "seeds": 2,
              "inner_max_iter": 20, "dgd_lrs": [0.1, 0.5],
              "multipliers": {"PIGS": [5, 20], "AEG": [0.5, 1], "prox-AEG": [1, 5]}}
    return s


def level_name(split: str, alpha) -> str:
    return split if alpha is None else f"{split}{alpha:g}"


def _algorithm(family: str, step, s: dict) -> dict:
    """The algorithm table of ``family`` at ``step`` (a number or a list: a sweep)."""
    if family == "D-GD":
        return {"name": "DGD", "lr": step}
    if family == "PIGS":
        return {"name": "PIGS", "eta": step, "inner_max_iter": s["inner_max_iter"]}
    prox = {"inner_max_iter": s["inner_max_iter"]} if family == "prox-AEG" else {}
    return {"name": "AEG", "theta": step, "gamma": s["lam"], "prox": family == "prox-AEG"} | prox


def family_and_step(algorithm: dict) -> tuple[str, float]:
    """``(family, step)`` of an algorithm table of this protocol (``_algorithm``'s inverse)."""
    name = algorithm["name"]
    if name == "DGD":
        return "D-GD", float(algorithm["lr"])
    if name == "PIGS":
        return "PIGS", float(algorithm["eta"])
    return ("prox-AEG" if algorithm.get("prox") else "AEG"), float(algorithm["theta"])


def _raw(s: dict, name: str, split, alpha, fs, algorithms, seeds, variant, x64, max_batch, max_f=None) -> dict:
    data = {"split": split, "n_honest": s["n_honest"]} | ({} if alpha is None else {"alpha": alpha})
    byz = {"f": fs, "attack": s["attack"]} | ({} if max_f is None else {"max_f": max_f})
    raw = {"name": name, "seeds": seeds, "rounds": s["rounds"], "eval_every": s["eval_every"], "x64": x64,
           "data": data, "problem": {"name": "LogisticRegression", "lam": s["lam"]}, "byzantine": byz,
           "aggregator": {"name": "Huber", "variant": variant}, "algorithm": algorithms}
    return raw | ({"max_batch": max_batch} if max_batch else {})


def reproduce_revision(out_dir: Path, *, quick=False, data_source=None, seeds=None, variant="authors", x64=False,
                       max_batch=None, show_progress=True, overrides: dict | None = None) -> dict:
    """Run the protocol (module docstring) into ``out_dir``: ``metrics.csv``, ``summary.csv``,
    ``revision_steps.csv`` (every candidate's AUC and the chosen step per level and method),
    ``revision_final.csv`` (final loss and test accuracy per level, f and method, mean and std over
    seeds), ``figures/revision_*.png`` and ``reproduce.json`` (stages, chosen steps, throughput).

    ``variant``: ``AdaptiveClipping``'s f = 0 behaviour (``"authors"`` or ``"fixed"``);
    ``overrides``: entries of ``settings`` replaced (e.g. ``{"levels": [("dirichlet", 1.0)],
    "rounds": 500}`` for a part of the grid; stages computed so are stored under their own keys)."""
    s = settings(quick) | (overrides or {})
    seeds = s["seeds"] if seeds is None else seeds
    out_dir = Path(out_dir)
    started = time.perf_counter()
    all_runs, timing, offset = [], {}, [0]
    log = {"experiment": "revision", "quick": quick, "variant": variant, "settings": s | {"seeds": seeds},
           "stages": [], "chosen_steps": {}}
    stages = StageCache(out_dir / "stages", data_source, 3 * len(s["levels"]), show_progress)
    curves = {}  # level -> f -> family -> list of (comm_rounds, loss) per seed
    tuning = {}  # level -> family -> step -> list of loss curves (seed order)

    for split, alpha in s["levels"]:
        level = level_name(split, alpha)

        def stage(name, fs, algorithms, max_f=None):
            cfg, runs, tim, meta = stages.run(name, level, _raw(
                s, f"revision:{name}:{level}", split, alpha, fs, algorithms, seeds, variant, x64, max_batch, max_f))
            out = []
            for rid, seed, _, trace in runs:
                spec = cfg.runs[rid]
                family, step = family_and_step(spec.algorithm.resolved())
                cols = spec.columns | {"stage": name, "level": level, "family": family, "step": step}
                out.append((rid + offset[0], seed, cols, trace))
            timing.update({rid + offset[0]: t for rid, t in tim.items()})
            offset[0] += len(cfg.runs)
            log["stages"].append({"stage": name, "level": level, "runs": len(cfg.runs), "seeds": len(cfg.seeds),
                                  "rounds": cfg.rounds} | {k: meta.get(k) for k in ("compile_s", "run_s", "programs",
                                                                                     "resumed_from")})
            all_runs.extend(out)
            return out

        def pick(runs, family):
            choice = lowest_auc([{"method": c["family"], "step": c["step"], "f": c["f"],
                                  "loss": np.asarray(tr.metrics["loss"])} for _, _, c, tr in runs
                                 if c["family"] == family])[family]
            tuning.setdefault(level, {})[family] = {
                "choice": choice, "curves": {st: [(np.asarray(tr.metrics[COUNTER]), np.asarray(tr.metrics["loss"]))
                                                  for _, _, c, tr in runs if c["family"] == family and c["step"] == st]
                                             for st in choice.scores}}
            return choice

        stage1 = stage("tuning1", [0], [_algorithm("D-GD", s["dgd_lrs"], s)])
        lr = pick(stage1, "D-GD").step
        stage2 = stage("tuning2", [0], [_algorithm(fam, [m * lr for m in s["multipliers"][fam]], s)
                                        for fam in ("PIGS", "AEG", "prox-AEG")])
        chosen = {"D-GD": lr} | {fam: pick(stage2, fam).step for fam in ("PIGS", "AEG", "prox-AEG")}
        log["chosen_steps"][level] = chosen
        for _, _, c, _ in stage1 + stage2:
            c["selected"] = c["step"] == chosen[c["family"]]
        attacked_fs = [f for f in s["fs"] if f > 0]
        stage3 = stage("grid", attacked_fs, [_algorithm(fam, chosen[fam], s) for fam in FAMILIES],
                       max_f=max(attacked_fs)) if attacked_fs else []
        per_f = curves.setdefault(level, defaultdict(lambda: defaultdict(list)))
        for _, _, c, tr in [r for r in stage1 + stage2 if r[2]["selected"]] + stage3:
            per_f[c["f"]][c["family"]].append((np.asarray(tr.metrics[COUNTER]), np.asarray(tr.metrics["loss"]),
                                               np.asarray(tr.eval_metrics.get("test_acc", [np.nan]))))
    stages.finish()
    log["environment"] = environment()
    log["warnings"] = write_results(out_dir, {"revision": log}, all_runs, timing)
    for line in log["warnings"]:
        warn(line)
    tables = [steps_table(out_dir, tuning), final_table(out_dir, curves)]
    figures = tuning_figures(out_dir, tuning) + loss_figures(out_dir, curves, s)
    rate = stages.run_rounds / stages.run_s if stages.run_s else None
    log |= {"stages_loaded": stages.loaded, "stages_computed": stages.computed, "compile_s": stages.compile_s,
            "run_s": stages.run_s, "run_rounds_computed": stages.run_rounds, "run_rounds_per_s": rate,
            "wall_s": time.perf_counter() - started, "figures": [str(p) for p in figures],
            "tables": [str(t) for t in tables]}
    write_json(out_dir / "reproduce.json", log)
    return log


def grid_run_rounds(s: dict, seeds: int) -> int:
    """Run-rounds of the whole protocol (every stage, every level): what the time estimate divides."""
    per_level_runs = len(s["dgd_lrs"]) + sum(len(v) for v in s["multipliers"].values()) + len(FAMILIES) * sum(
        f > 0 for f in s["fs"])
    return per_level_runs * len(s["levels"]) * seeds * s["rounds"]


def steps_table(out_dir: Path, tuning: dict) -> Path:
    """``revision_steps.csv``: per level, method and candidate step its AUC, discarded curves, the choice."""
    rows = []
    for level, fams in tuning.items():
        for fam, t in fams.items():
            ch = t["choice"]
            for step, auc in ch.scores.items():
                rows.append({"level": level, "method": fam, "step": step, "auc": auc,
                             "discarded_curves": ch.discarded[step], "selected": step == ch.step})
    path = out_dir / "revision_steps.csv"
    write_csv(path, rows)
    return path


def final_table(out_dir: Path, curves: dict) -> Path:
    """``revision_final.csv``: per level, f and method the final training loss and the last test
    accuracy (mean and std over seeds), and the mean training loss over the rounds (the AUC)."""
    rows = []
    for level, per_f in curves.items():
        for f in sorted(per_f):
            for fam in FAMILIES:
                runs = per_f[f].get(fam, [])
                if not runs:
                    continue
                final = np.array([loss[-1] for _, loss, _ in runs])
                auc = np.array([loss.mean() for _, loss, _ in runs])
                acc = np.array([a[-1] for _, _, a in runs])
                rows.append({"level": level, "f": f, "method": fam, "seeds": len(runs),
                             "final_loss_mean": f"{final.mean():.6g}", "final_loss_std": f"{final.std():.3g}",
                             "auc_mean": f"{auc.mean():.6g}", "test_acc_mean": f"{acc.mean():.4f}",
                             "test_acc_std": f"{acc.std():.4f}"})
    path = out_dir / "revision_final.csv"
    write_csv(path, rows)
    return path


def _band(ax, comm, losses, color, label, lw=1.5, alpha=0.2):
    arr = np.vstack(losses)
    ax.plot(comm, arr.mean(axis=0), color=color, lw=lw, label=label)
    if len(losses) > 1:
        ax.fill_between(comm, arr.min(axis=0), arr.max(axis=0), color=color, alpha=alpha, lw=0)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _log_axes(ax):
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)


def tuning_figures(out_dir: Path, tuning: dict) -> list[Path]:
    """``figures/revision_tuning_<level>.png``: per method, every candidate step's training loss at
    f = 0 (mean over seeds), the selected one drawn thick and marked in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for level, fams in tuning.items():
        fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.4), squeeze=False)
        for ax, (fam, t) in zip(axes[0], fams.items()):
            ch = t["choice"]
            cmap = plt.get_cmap("viridis", max(len(ch.scores), 2))
            for i, (step, runs) in enumerate(t["curves"].items()):
                finite = [loss for _, loss in runs if np.all(np.isfinite(loss))]
                if not finite:
                    continue
                sel = step == ch.step
                label = f"{step:.4g}" + (" (selected)" if sel else "") + f"  AUC {ch.scores[step]:.4g}"
                ax.plot(runs[0][0], np.mean(finite, axis=0), color="black" if sel else cmap(i), lw=2.6 if sel else 1.0,
                        label=label, zorder=3 if sel else 2)
            _log_axes(ax)
            ax.set_title(f"{fam}, {level}, f = 0")
            ax.set_xlabel("communication rounds")
            ax.legend(fontsize=7)
        axes[0][0].set_ylabel("training loss $L_H(x_t)$")
        made.append(_save(fig, out_dir / "figures" / f"revision_tuning_{level}.png"))
    return made


def loss_figures(out_dir: Path, curves: dict, s: dict) -> list[Path]:
    """``figures/revision_loss_<level>.png``: one panel per f, training loss against communication
    rounds of every method at its step (mean over seeds, min-max band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for level, per_f in curves.items():
        fs = sorted(per_f)
        fig, axes = plt.subplots(1, len(fs), figsize=(3.8 * len(fs), 3.4), squeeze=False, sharey=True)
        for ax, f in zip(axes[0], fs):
            for fam in FAMILIES:
                runs = per_f[f].get(fam, [])
                if runs:
                    _band(ax, runs[0][0], [loss for _, loss, _ in runs], COLORS[fam], fam)
            _log_axes(ax)
            ax.set_title(f"{level}, f = {f} (n = {s['n_honest']} + {f})")
            ax.set_xlabel("communication rounds")
        axes[0][0].set_ylabel("training loss $L_H(x_t)$")
        axes[0][0].legend(fontsize=8)
        made.append(_save(fig, out_dir / "figures" / f"revision_loss_{level}.png"))
    return made
