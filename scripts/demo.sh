#!/usr/bin/env bash
# The whole product on a built-in default: a synthetic line -> good parts collected at the station ->
# train -> evaluate -> export -> replay. A listener in another process receives every verdict over
# ZeroMQ, as a PLC gateway would.
set -euo pipefail
OUT=${DEMO_DIR:-build/demo}
PARTS=${DEMO_PARTS:-100}
GOOD=${DEMO_GOOD_PARTS:-400}
PORT=${DEMO_PORT:-5599}
ENDPOINT="tcp://127.0.0.1:$PORT"
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1/6 synthesize a production line: a conveyor video of $PARTS parts (some defective, ground truth in CSV)"
trainer synth "$OUT/line" --n-train 0 --n-test 0 --video "$OUT/line.mp4" --parts "$PARTS"

echo "== 2/6 record $GOOD good parts of the same line and collect them as the station sees them"
trainer synth "$OUT/recording" --n-train 0 --n-test 0 --video "$OUT/good-parts.mp4" --parts "$GOOD" \
    --defect-rate 0 --first-part 100000
inspector collect "$OUT/good-parts.mp4" --out "$OUT/station" --config "$OUT/good-parts.toml"

echo "== 3/6 train the detector on the good parts only (threshold from held-out good parts)"
# 64 px keeps the demo to minutes on a CPU; the folder default, 128 px, catches more of the smallest
# defects and trains about 4.5x longer (docs/research/findings.md F22): drop --image-size on a workstation GPU.
trainer fit "$OUT/station" --out "$OUT/run" --image-size 64

echo "== 4/6 evaluate on the conveyor video's parts, labelled by its ground truth (AUROC per defect)"
inspector collect "$OUT/line.mp4" --out "$OUT/station" --config "$OUT/line.toml" --ground-truth "$OUT/line.csv"
trainer evaluate "$OUT/run"

echo "== 5/6 export the scoring path to ONNX (+ manifest), verified against torch"
trainer export "$OUT/run" --out "$OUT/model.onnx"

echo "== 6/6 replay the conveyor video through the inspection pipeline, a listener attached"
inspector listen "$ENDPOINT" --count "$PARTS" --save "$OUT/failed" > "$OUT/listen.log" 2>&1 &
LISTENER=$!
trap 'kill $LISTENER 2>/dev/null || true' EXIT
inspector replay "$OUT/line.mp4" --model "$OUT/model.onnx" --config "$OUT/line.toml" \
    --ground-truth "$OUT/line.csv" --publish "$ENDPOINT" --json "$OUT/replay.json" --state "$OUT/state"
if wait "$LISTENER"; then :; else echo "listener ended with an error (see $OUT/listen.log)"; fi
trap - EXIT
echo "== verdicts received by the listener ($OUT/listen.log):"
cat "$OUT/listen.log"
echo "== done: $OUT/run/metrics.json, $OUT/model.onnx, $OUT/replay.json"
