#!/usr/bin/env bash
# Export a trained run, check FP16 fidelity on a test set, benchmark ONNX Runtime (and TensorRT) vs torch eager.
# usage: scripts/bench_engines.sh RUN_DIR DATA_DIR [OUT_DIR]    env: PY, BATCHES (1,8,32), THREADS ("2 1"), SECS (3)
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/bench_engines.sh RUN_DIR DATA_DIR [OUT_DIR]"
RUN=${1:?$usage}
DATA=${2:?$usage}
OUT=${3:-build/bench-engines}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
"$PY" -m trainer export "$RUN" --out "$OUT/model.onnx"
# FP16 fidelity (TensorRT engine where one is built beside the ONNX file, else the FP16 graph in ONNX Runtime).
"$PY" -m engines verify "$OUT/model.onnx" --data "$DATA" --json "$OUT/verify.json" || echo "verify: outside tolerance"
for t in ${THREADS:-2 1}; do
  echo "== $t thread(s); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
  "$PY" -m trainer bench-eager "$RUN" --model "$OUT/model.onnx" --batch "${BATCHES:-1,8,32}" --threads "$t" \
    --seconds "${SECS:-3}" --json "$OUT/engines-threads$t.json"
done
