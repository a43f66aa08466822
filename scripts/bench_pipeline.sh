#!/usr/bin/env bash
# The daemon's throughput in fast replay against `engines bench` for the same model and batch
# (docs/inspector.md, "Throughput"): MODEL.onnx [OUT_DIR] [VIDEO]. Without VIDEO a 40-part line is
# synthesized. Continuous trigger (every frame is a part), one 128 px ROI, batch 8; engine threads
# 1 and 2 (ENGINES_ORT_THREADS), then the daemon's default; with and without the 3 images per part.
set -euo pipefail
MODEL=${1:?usage: scripts/bench_pipeline.sh MODEL.onnx [OUT_DIR] [VIDEO]}
OUT=${2:-build/bench-pipeline}
VIDEO=${3:-}
mkdir -p "$OUT"
if [ -z "$VIDEO" ]; then
  trainer synth "$OUT/line" --n-train 0 --n-test 0 --video "$OUT/line.mp4" --parts 40 > /dev/null
  VIDEO="$OUT/line.mp4"
fi
common='station_id = "bench"
[[rois]]
name = "part"
x = 128
y = 0
width = 128
height = 128
[trigger]
mode = "continuous"
[engine]
max_batch = 8
max_wait_ms = 10'
printf '%s\n' "$common" > "$OUT/cont.toml"
printf '%s\n[publish]\nsend_images = "none"\n' "$common" > "$OUT/cont_noimg.toml"
for t in 1 2; do
  engines bench "$MODEL" --batch 8 --threads "$t" --seconds 3 --json "$OUT/thru-bench-$t.json" > /dev/null
  for c in cont cont_noimg; do
    ENGINES_ORT_THREADS=$t inspector replay "$VIDEO" --model "$MODEL" --config "$OUT/$c.toml" \
        --json "$OUT/thru-$c-$t.json" > /dev/null
  done
done
for c in cont cont_noimg; do
  env -u ENGINES_ORT_THREADS inspector replay "$VIDEO" --model "$MODEL" --config "$OUT/$c.toml" \
      --json "$OUT/thru-$c-default.json" > /dev/null
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
load = lambda name: json.load(open(f"{out}/{name}.json"))
print("| ORT threads | engines bench --batch 8 | replay, images | replay, no images |")
print("|---|---|---|---|")
for t in ("1", "2"):
    b = load(f"thru-bench-{t}")[0]["images_per_s"]
    r1, r2 = load(f"thru-cont-{t}")["crops_per_s"], load(f"thru-cont_noimg-{t}")["crops_per_s"]
    print(f"| {t} | {b:.0f} images/s | {r1:.0f} parts/s ({r1 / b:.0%}) | {r2:.0f} parts/s ({r2 / b:.0%}) |")
d1, d2 = load("thru-cont-default")["crops_per_s"], load("thru-cont_noimg-default")["crops_per_s"]
print(f"| daemon default | - | {d1:.0f} parts/s | {d2:.0f} parts/s |")
PY
