#!/usr/bin/env bash
# A GPU check in one script (issue 13), under 8 minutes on one GPU; JSON under results/gpu/.
#   1. the test files that exercise the device path (sweeps, planning, sharding, runner);
#   2. the throughput table (benchmarks/bench_scale.py) at 1, 64 and 256 vmapped runs, and many workers;
#   3. one cell of Experiment A with 5 seeds (benchmarks/gpu_check_expA.toml) through `byzjax run`.
# Reduced mode (runs anywhere, slowly, e.g. on CPU to test this script):
#   benchmarks/gpu_check.sh --reduced        or   BYZJAX_GPU_CHECK_REDUCED=1 benchmarks/gpu_check.sh
# PYTHON selects the interpreter (default: python); OUT the result folder (default: results/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-results/gpu}
REDUCED=${BYZJAX_GPU_CHECK_REDUCED:-0}
[[ "${1:-}" == "--reduced" ]] && REDUCED=1
mkdir -p "$OUT"
start=$(date +%s)

"$PY" - "$OUT/environment.json" "$REDUCED" <<'PYEOF'
import json, sys, datetime, jax
d = jax.devices()[0]
json.dump({"date": datetime.datetime.now().isoformat(timespec="seconds"), "jax": jax.__version__,
           "devices": [f"{x.platform}:{x.device_kind}" for x in jax.devices()], "platform": d.platform,
           "reduced": sys.argv[2] == "1"}, open(sys.argv[1], "w"), indent=1)
print("devices:", jax.devices())
PYEOF

if [[ "$REDUCED" == 1 ]]; then
  TESTS=(tests/test_scale.py -k "mesh or pad or configs_that_fit or bad_arguments")
  BENCH=(--data synthetic --runs 1 4 --rounds 3 --loop-runs 1 --skip devices workers)
  RUN=(--data synthetic --rounds 6 --seeds 2)
else
  TESTS=(tests/test_simulate.py tests/test_scale.py)
  BENCH=(--runs 1 64 256 --rounds 50 --loop-runs 4 --skip devices --workers 20 100 500 1000 --worker-rounds 5)
  RUN=()
fi

echo "== 1/3 tests: ${TESTS[*]}"
set +e
timeout 240 "$PY" -m pytest "${TESTS[@]}" -q -p no:cacheprovider --junitxml="$OUT/tests.xml" 2>&1 | tail -n 15
tests_rc=${PIPESTATUS[0]}
set -e

echo "== 2/3 throughput (bench_scale.py ${BENCH[*]})"
timeout 300 "$PY" benchmarks/bench_scale.py "${BENCH[@]}" --note "gpu_check.sh" --json "$OUT/bench_scale.json" \
  | tee "$OUT/bench_scale.md"

echo "== 3/3 Experiment A, one cell (byzjax run ${RUN[*]})"
timeout 240 "$PY" -m byzjax.app.cli run benchmarks/gpu_check_expA.toml --out "$OUT/expA" --quiet --no-plot "${RUN[@]}"

"$PY" - "$OUT" "$tests_rc" "$start" <<'PYEOF'
import json, sys, time
from pathlib import Path
out, rc, start = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
summary = {"environment": json.loads((out / "environment.json").read_text()), "tests_rc": rc,
           "bench_scale": json.loads((out / "bench_scale.json").read_text()),
           "expA_meta": json.loads((out / "expA" / "config.json").read_text()).get("meta"),
           "wall_s": time.time() - start}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(f"wrote {out}/summary.json (tests rc {rc}, {summary['wall_s']:.0f} s)")
PYEOF
exit "$tests_rc"
