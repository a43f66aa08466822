#!/usr/bin/env bash
# The device check for a box with an NVIDIA GPU (x86 or Jetson): build the TensorRT engine of the demo model
# (twice: cold, then with the timing cache), verify it against ONNX Runtime FP32 on the demo's labelled crops,
# bench it, replay the demo video on it, and run the `-m gpu` tests; one JSON of figures at the end.
# usage: scripts/gpu_check.sh [DEMO_DIR] [OUT_DIR]
#   DEMO_DIR (build/demo): what scripts/demo.sh leaves (model.onnx + model.json, line.mp4, line.toml, line.csv,
#   station/); made by scripts/demo.sh when model.onnx is missing (needs the trainer extra, minutes).
#   OUT_DIR (build/gpu-check): engine, logs, and gpu_check.json.
#   env: PY (.venv/bin/python), MAX_BATCH (32), BATCHES (1,8,32), SECS (2)
# Without a GPU, or without a usable TensorRT + pycuda, it stops at once with one line on stderr, exit 1.
# Exit 0 when every step passed, 1 otherwise (gpu_check.json still written, each step's exit code in it).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
DEMO=${1:-build/demo}
OUT=${2:-build/gpu-check}
PY=${PY:-.venv/bin/python}
MAX_BATCH=${MAX_BATCH:-32}
BATCHES=${BATCHES:-1,8,32}
SECS=${SECS:-2}
NVIDIA_SMI=${GPU_CHECK_NVIDIA_SMI:-nvidia-smi}
TEGRA_RELEASE=${GPU_CHECK_TEGRA_RELEASE:-/etc/nv_tegra_release}
fail() { echo "gpu_check: $*" >&2; exit 1; }

# ---- 0. a GPU and a usable TensorRT backend, or one line saying what is missing
if [ ! -f "$TEGRA_RELEASE" ] && ! "$NVIDIA_SMI" -L >/dev/null 2>&1; then
    fail "no NVIDIA GPU here ($NVIDIA_SMI -L fails and there is no $TEGRA_RELEASE); run it on the GPU box"
fi
command -v "$PY" >/dev/null 2>&1 || [ -x "$PY" ] || fail "no python at $PY: set PY, or run make demo first (it makes .venv)"
why=$("$PY" -c 'from engines.tensorrt_engine import tensorrt_available as t
ok, why = t(); print(why); raise SystemExit(0 if ok else 1)' 2>/dev/null)
usable=$?
why=${why##*$'\n'}
if [ "$usable" != 0 ]; then
    fail "TensorRT backend not usable: ${why:-the engines package does not import with $PY}; install it with deploy/install.sh --plan's pip command (x86: pip install '.[tensorrt-cu12]' or '.[tensorrt-cu13]', Jetson: JetPack's python3-libnvinfer + '.[jetson]')"
fi

mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
BIN=$(dirname "$PY")
STEPS=""
step() {   # step NAME COMMAND...: run it with its output in logs/NAME.log, keep its exit code and milliseconds
    local name=$1 t0 rc
    shift
    echo "== $name: $*"
    t0=$(date +%s%N)
    "$@" > "$OUT/logs/$name.log" 2>&1
    rc=$?
    STEPS+="$name=$rc=$(( ($(date +%s%N) - t0) / 1000000 ));"
    if [ "$rc" != 0 ]; then
        echo "   exit $rc; the end of $OUT/logs/$name.log:"
        tail -n 3 "$OUT/logs/$name.log"
    fi
}

# ---- 1. the demo model (trained on the CPU or GPU by scripts/demo.sh when missing)
if [ ! -f "$DEMO/model.onnx" ]; then
    step demo env DEMO_DIR="$DEMO" PATH="$BIN:$PATH" scripts/demo.sh
fi
[ -f "$DEMO/model.onnx" ] || fail "no $DEMO/model.onnx (scripts/demo.sh failed: see $OUT/logs/demo.log)"
cp "$DEMO/model.onnx" "$DEMO/model.json" "$OUT/"
rm -f "$OUT"/model.engine "$OUT"/model.timing-*.cache

# ---- 2. build cold, then again with the timing cache the first build left
step build_cold "$PY" -m engines build "$OUT/model.onnx" --out "$OUT/model.engine" --fp16 --max-batch "$MAX_BATCH"
step build_cached "$PY" -m engines build "$OUT/model.onnx" --out "$OUT/model.engine" --fp16 --max-batch "$MAX_BATCH"

# ---- 3. fidelity, speed, the daemon's pipeline on the engine (backend forced: no silent ONNX Runtime fallback)
step verify "$PY" -m engines verify "$OUT/model.engine" --data "$DEMO/station" --json "$OUT/verify.json"
step bench "$PY" -m engines bench "$OUT/model.engine" --batch "$BATCHES" --seconds "$SECS" --json "$OUT/bench.json"
rm -rf "$OUT/state"
step replay env INSPECTOR_ENGINE__BACKEND=tensorrt "$PY" -m inspector replay "$DEMO/line.mp4" \
    --model "$OUT/model.engine" --config "$DEMO/line.toml" --ground-truth "$DEMO/line.csv" \
    --json "$OUT/replay.json" --state "$OUT/state"

# ---- 4. the real-TensorRT tests (build/load/infer vs ONNX Runtime, another thread, version refusal)
step pytest_gpu "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_engines_tensorrt.py

# ---- 5. one JSON of figures
"$PY" - "$OUT" "$STEPS" "$("$NVIDIA_SMI" -L 2>/dev/null | head -n1)" <<'EOF'
import json
import sys
from pathlib import Path

out, steps, smi = Path(sys.argv[1]), sys.argv[2], sys.argv[3]


def load(name):
    p = out / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


manifest = load("model.json") or {}
engine = out / "model.engine"
caches = sorted(out.glob("model.timing-*.cache"))
pytest_log = out / "logs" / "pytest_gpu.log"
record = {
    "gpu": {"nvidia_smi": smi or None, **{k: v for k, v in (manifest.get("tensorrt") or {}).items()}},
    "steps": {n: {"exit": int(rc), "seconds": round(int(ms) / 1000, 2)}
              for n, rc, ms in (item.split("=") for item in steps.split(";") if item)},
    "engine_bytes": engine.stat().st_size if engine.is_file() else None,
    "timing_cache": {"file": caches[-1].name, "bytes": caches[-1].stat().st_size} if caches else None,
    "verify": load("verify.json"),
    "bench": load("bench.json"),
    "replay": load("replay.json"),
    "pytest_gpu": pytest_log.read_text().strip().splitlines()[-1] if pytest_log.is_file() else None,
}
record["ok"] = all(s["exit"] == 0 for s in record["steps"].values())
(out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
print(f"== {out / 'gpu_check.json'}: ok={record['ok']}")
raise SystemExit(0 if record["ok"] else 1)
EOF
