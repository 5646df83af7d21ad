"""The ``byzjax`` command line: ``run``, ``list``, ``plot``, ``report``, ``reproduce``, ``theory``."""

from __future__ import annotations

import argparse
import io
import sys

EPILOG = "Config format and examples: see README.md (section 'Config files')."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="byzjax", description="JAX simulator for Byzantine-robust distributed optimization.",
                                epilog=EPILOG)
    from byzjax import __version__

    p.add_argument("--version", action="version", version=f"byzjax {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the experiment grid described by a TOML config file (or a ByzFL config.json)",
                       description="Run every configuration x seed of CONFIG (one compiled program per static "
                                   "structure) and write config.json, metrics.csv, summary.csv and figures to --out.")
    r.add_argument("config", nargs="?", help="TOML experiment file (see README.md)")
    r.add_argument("--byzfl", metavar="CONFIG.json",
                   help="run a ByzFL benchmark config.json as it is (instead of CONFIG): its grid, with one "
                        "'byzfl: ...' line per field mapped differently; --out defaults to its results_directory")
    r.add_argument("--dry-run", action="store_true",
                   help="print the runs the grid expands to (one line each) and the number of compiled programs; "
                        "nothing is run or written")
    r.add_argument("--out", help="output folder (created); a folder holding this config's results is "
                                                 "resumed, one holding another config's is refused unless --force")
    r.add_argument("--force", action="store_true", help="overwrite the results (and figures) already in --out")
    r.add_argument("--devices", type=int, help="use the first N devices (default: every device JAX sees)")
    r.add_argument("--max-memory", type=int, metavar="BYTES",
                   help="memory budget per device for one program call (default: what the device reports)")
    r.add_argument("--coordinator", metavar="HOST:PORT",
                   help="multi-process run: the coordinator's address (else $BYZJAX_COORDINATOR; Slurm is detected)")
    r.add_argument("--num-processes", type=int, help="multi-process run: number of processes (else $BYZJAX_NUM_PROCESSES)")
    r.add_argument("--process-id", type=int, help="multi-process run: this process's id (else $BYZJAX_PROCESS_ID)")
    r.add_argument("--data", help="override [data].source: 'fashion-mnist', 'synthetic', a folder of MNIST-format IDX files, or 'cifar10:DIR' (network problems)")
    r.add_argument("--seeds", type=int, help="override the number of seeds (0..S-1)")
    r.add_argument("--rounds", type=int, help="override the number of rounds")
    r.add_argument("--x64", action="store_true", help="run in float64 (default float32)")
    r.add_argument("--no-plot", action="store_true", help="do not draw figures")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("list", help="every registered component with its parameters and defaults, by kind",
                   description="Print the aggregators, pre-aggregators, attacks, algorithms and problems a config "
                               "may name, with the parameters a config may set and their defaults.")

    pl = sub.add_parser("plot", help="draw the curves of a result folder",
                        description="Read DIR/metrics.csv and write convergence and accuracy figures (PNG and PDF).")
    pl.add_argument("dir", help="output folder of 'byzjax run'")
    pl.add_argument("--out", help="figure folder (default DIR/figures)")

    rep = sub.add_parser("report", help="paper tables and heatmaps of a result folder",
                         description="Read DIR/summary.csv and write, as CSV and Markdown, the hyperparameters "
                                     "selected by the best worst case over attacks, the results at them (mean +- std "
                                     "over seeds per aggregator x attack x f x heterogeneity, and the worst case over "
                                     "attacks) and every value tried; and heatmaps over (f, heterogeneity) and "
                                     "accuracy-vs-f curves (PNG and PDF). See README.md, section 'Reports'.")
    rep.add_argument("dir", help="output folder of 'byzjax run' (or 'byzjax reproduce')")
    rep.add_argument("--out", help="report folder (default DIR/report)")

    rp = sub.add_parser("reproduce", help="reproduce the paper's Experiment A (short) or B (long), or the authors' revised protocol",
                        description="Run the paper's experiments (arXiv 2602.03329, its experiments): results, figures and the "
                                    "rounds-to-suboptimality tables go to --out. 'revision': the authors' revised "
                                    "protocol (40 honest workers, f in {0,1,5,10,20}, iid and Dirichlet 0.1/1/5, Huber "
                                    "aggregator, Optimal ALIE, steps tuned at f=0 by lowest AUC; default 5 seeds).")
    rp.add_argument("which", choices=["short", "long", "revision"],
                    help="short = Experiment A, long = Experiment B, revision = the authors' revised protocol")
    rp.add_argument("--quick", action="store_true", help="reduced grid (f=1, iid, a few dozen rounds) for a first try")
    rp.add_argument("--data", help="'fashion-mnist' (default, Debian package), 'synthetic', or a folder of MNIST-format files")
    rp.add_argument("--seeds", type=int, help="number of seeds: data split and initialisation (default 1; revision: 5)")
    rp.add_argument("--out", help="output folder (default results/paper_<which>[_quick])")
    rp.add_argument("--steps", choices=["tuned", "paper", "tuned+grid"], default="tuned",
                    help="tuned: step sizes tuned at f=0 (default, needed on Fashion-MNIST); paper: the paper's exact "
                         "ones; tuned+grid: tuned, plus the paper's PIGS eta grid run under attack in every cell")
    rp.add_argument("--tune-rounds", type=int,
                    help="tuned mode: length of the tuning runs (default: the reference length); the chosen steps "
                         "are then rerun at full length")
    rp.add_argument("--split", action="append", dest="splits", metavar="SPLIT",
                    help="short|long: run only this split (iid or dirichlet; repeat for several); default: all "
                         "of the experiment's splits. Stages are shared with the whole run.")
    rp.add_argument("--stored-only", action="store_true",
                    help="short|long: compute nothing; write the results, tables and figures of the stages stored "
                         "in --out so far (a long reproduction's partial results; the others are named)")
    rp.add_argument("--eval-every", type=int, default=2, help="accuracy evaluation interval in rounds (paper: 2)")
    rp.add_argument("--max-batch", type=int, help="cap on runs per compiled call (memory)")
    rp.add_argument("--x64", action="store_true", help="run in float64")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    th = sub.add_parser("theory", help="print what theory predicts for a config before running it",
                        description="Build CONFIG's distinct experiments (the first seed's data) and print, per "
                                    "experiment, the probe of byzjax.theory.theory_probe: L, mu and delta at x0 and "
                                    "x*, L*, the (G, B) fit, kappa, the predicted D-GD floor, recommended steps "
                                    "and the predicted ranking.")
    th.add_argument("config", help="TOML experiment file (see README.md)")
    th.add_argument("--data", help="override [data].source (as for 'byzjax run')")
    th.add_argument("--all", action="store_true", help="probe every distinct experiment (default: the first only)")
    return p


def main(argv=None) -> int:
    command_line = ["byzjax", *(sys.argv[1:] if argv is None else argv)]
    args = _parser().parse_args(argv)
    args.command_line = command_line
    for stream in (sys.stdout, sys.stderr):  # plan and result lines reach a log file (nohup ... > log) as printed
        if isinstance(stream, io.TextIOWrapper):  # not pytest's captured streams
            stream.reconfigure(line_buffering=True)
    if getattr(args, "x64", False):
        import jax

        jax.config.update("jax_enable_x64", True)
    from byzjax._validation import ConfigError

    try:
        return _dispatch(args)
    except ConfigError as err:
        print(f"byzjax: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # byzjax.app.files.Interrupted says where the finished runs are
        print(f"byzjax: interrupted{f': {err}' if str(err) else ''}", file=sys.stderr)
        return 130


def _run_config(args, *, overrides: dict):
    """The grid of ``byzjax run``: ``CONFIG`` (TOML) or ``--byzfl CONFIG.json`` (its notes printed,
    ``--out`` defaulting to its ``results_directory``), with the command line's overrides."""
    from byzjax._validation import ConfigError
    from byzjax.app.config import load_config

    if (args.config is None) == (args.byzfl is None):
        raise ConfigError("command line: run needs a TOML CONFIG or --byzfl CONFIG.json (one of them), got "
                          + ("both" if args.config else "neither"))
    if args.config is not None:
        if str(args.config).endswith(".json"):
            raise ConfigError(f"command line: {args.config} is a JSON file; CONFIG is a TOML file (for a ByzFL "
                              "benchmark config.json use --byzfl)")
        return load_config(args.config).override(**overrides)
    from byzjax.app.byzfl import NOTE, load_byzfl

    cfg, translation = load_byzfl(args.byzfl)
    for note in translation.notes:
        print(note)
    if args.out is None and not args.dry_run and translation.results_directory:
        args.out = translation.results_directory
        print(f"{NOTE}results_directory {args.out} -> --out {args.out}")
    return cfg.override(**overrides)


def _dry_run(cfg, devices=None, max_memory=None) -> int:
    """``byzjax run CONFIG --dry-run``: the runs (their columns, one line each) and the programs on
    stdout; each program's estimated memory per device on stderr, with the runner's plan lines."""
    from byzjax._validation import ConfigError
    from byzjax.app.config import format_bytes, plan, program_memory

    columns, groups = plan(cfg)
    program = {i: g for g, members in enumerate(groups) for i in members}
    for i, cols in enumerate(columns):
        print(f"run {i}  program {program[i]}  " + "  ".join(f"{k}={v}" for k, v in cols.items()))
    try:
        memory = program_memory(cfg, groups, devices=devices, max_memory=max_memory)
    except ConfigError as err:  # e.g. the data is not there: the run list stands without it
        print(f"program memory: not estimated ({err})", file=sys.stderr)
        memory = []
    seeds = len(cfg.seeds)
    for g, m in enumerate(memory):
        calls = f"in {m['calls']} calls of {m['configs_per_call']}" if m["calls"] > 1 else "in one call"
        print(f"program {g}: {len(groups[g])} runs x {seeds} seeds {calls}, estimated memory per device "
              f"{format_bytes(m['estimate_bytes'])} (data {format_bytes(m['shared_bytes'])} + "
              f"{m['configs_per_call']} x {seeds} x {format_bytes(m['per_run_bytes'])} per run; budget "
              f"{format_bytes(m['budget_bytes'])})", file=sys.stderr)
    print(f"{len(columns)} runs x {len(cfg.seeds)} seeds = {len(columns) * len(cfg.seeds)} trajectories of "
          f"{cfg.rounds} rounds in {len(groups)} compiled programs")
    return 0


def _dispatch(args) -> int:
    if args.command == "list":
        from byzjax.app.config import describe_components

        print("\n".join(describe_components()))
        return 0
    if args.command == "run" and args.dry_run:
        return _dry_run(_run_config(args, overrides={"seeds": args.seeds, "rounds": args.rounds,
                                                         "x64": True if args.x64 else None, "source": args.data}),
                        devices=args.devices, max_memory=args.max_memory)
    if args.command == "run" and args.out is None and args.byzfl is None:
        from byzjax._validation import ConfigError

        raise ConfigError("command line: run needs --out DIR (or --dry-run to list the runs without running them)")
    if args.command == "run":
        from byzjax.app.config import check_int
        from byzjax.app.plotting import plot_dir
        from byzjax.app.runner import check_output, describe, execute, grid_signature
        from byzjax.devices import initialize_distributed

        for flag, value in (("--devices", args.devices), ("--max-memory", args.max_memory)):
            if value is not None:
                check_int("command line", flag, value, 1)
        # before any JAX computation (building the config's components makes arrays)
        writer = initialize_distributed(args.coordinator, args.num_processes, args.process_id).is_writer
        cfg = _run_config(args, overrides={"seeds": args.seeds, "rounds": args.rounds, "x64": True if args.x64 else None,
                                               "source": args.data})
        if args.out is None:
            from byzjax._validation import ConfigError

            raise ConfigError("command line: run needs --out DIR (the ByzFL config has no results_directory)")
        if writer:
            check_output(args.out, grid_signature(cfg), args.force)  # before anything is computed
        _, _, meta = execute(cfg, args.out, show_progress=not args.quiet, command_line=args.command_line,
                             force=args.force, devices=args.devices, max_memory=args.max_memory)
        if not writer:
            return 0
        print(f"wrote {args.out}/metrics.csv, summary.csv, config.json  {describe(meta)}")
        if not args.no_plot:
            for p in plot_dir(args.out):
                print(f"wrote {p}")
        return 0
    if args.command == "plot":
        from byzjax.app.plotting import plot_dir

        for p in plot_dir(args.dir, args.out):
            print(f"wrote {p}")
        return 0
    if args.command == "report":
        from byzjax.app.report import report

        for p in report(args.dir, args.out):
            print(f"wrote {p}")
        return 0
    if args.command == "reproduce":
        from byzjax.app.config import check_int
        from byzjax.app.files import check_out_dir
        from byzjax.app.reproduce import reproduce

        for flag, value in (("--seeds", args.seeds), ("--tune-rounds", args.tune_rounds),
                            ("--eval-every", args.eval_every), ("--max-batch", args.max_batch)):
            if value is not None:
                check_int("command line", flag, value, 1)
        out = check_out_dir(f"results/paper_{args.which}{'_quick' if args.quick else ''}" if args.out is None else args.out)
        if args.which == "revision":
            from byzjax._validation import ConfigError
            from byzjax.app.revision import reproduce_revision

            if args.steps != "tuned" or args.tune_rounds is not None:
                raise ConfigError("command line: reproduce revision tunes its steps by its own protocol; "
                                  "--steps and --tune-rounds apply to short|long only")
            if args.splits:
                raise ConfigError("command line: --split applies to reproduce short|long only "
                                  "(revision runs its heterogeneity levels as one grid)")
            if args.stored_only:
                raise ConfigError("command line: --stored-only applies to reproduce short|long only")

            log = reproduce_revision(out, quick=args.quick, data_source=args.data, seeds=args.seeds, x64=args.x64,
                                     max_batch=args.max_batch, show_progress=not args.quiet)
            print(f"wrote {out}/ (metrics.csv, summary.csv, revision_steps.csv, revision_final.csv, figures/)")
            print(f"steps: {log['chosen_steps']}  run-rounds/s: {log['run_rounds_per_s']}  "
                  f"wall {log['wall_s']:.1f}s of which compile {log['compile_s']:.1f}s")
            return 0
        log = reproduce(args.which, out, quick=args.quick, data_source=args.data, seeds=args.seeds or 1, mode=args.steps,
                        x64=args.x64, eval_every=args.eval_every, max_batch=args.max_batch,
                        show_progress=not args.quiet, tune_rounds=args.tune_rounds, splits=args.splits,
                        stored_only=args.stored_only)
        total, comp = log["wall_s"], log["compile_s"]  # this invocation's, not the stored stages'
        print(f"wrote {out}/ (metrics.csv, summary.csv, {args.which}_rounds.csv, {args.which}_floor.csv, figures/)")
        print(f"steps: {log.get('chosen_steps')}  estimated L at the start: {log.get('smoothness')}  "
              f"device: {log['environment']['device']}  "
              f"wall {total:.1f}s of which compile {comp:.1f}s")
        return 0
    if args.command == "theory":
        from byzjax.app.runner import theory_lines

        for line in theory_lines(args.config, data_source=args.data, every=args.all):
            print(line)
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
