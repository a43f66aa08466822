#!/usr/bin/env bash
# The whole product on a built-in default: synthetic line -> train -> evaluate -> export -> replay.
# A listener in another process receives every verdict over ZeroMQ, as a PLC gateway would.
set -euo pipefail
OUT=${DEMO_DIR:-build/demo}
PARTS=${DEMO_PARTS:-30}
PORT=${DEMO_PORT:-5599}
ENDPOINT="tcp://127.0.0.1:$PORT"
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1/5 synthesize a production line (images in the MVTec layout + a conveyor video)"
trainer synth "$OUT/line" --video "$OUT/line.mp4" --parts "$PARTS"

echo "== 2/5 train the detector on good parts only"
trainer fit "$OUT/line" --out "$OUT/run" --image-size 64

echo "== 3/5 evaluate on the held-out test split (AUROC, threshold)"
trainer evaluate "$OUT/run"

echo "== 4/5 export the scoring path to ONNX (+ manifest), verified against torch"
trainer export "$OUT/run" --out "$OUT/model.onnx"

echo "== 5/5 replay the conveyor video through the inspection pipeline, a listener attached"
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
