#!/usr/bin/env bash
# The whole product on a built-in default: a synthetic line -> good parts collected at the station ->
# train -> evaluate -> export -> replay. A listener in another process receives every verdict over
# ZeroMQ, and the plant gateway (`inspector gateway`: OPC UA, Modbus TCP, web page) serves them.
# Knobs: DEMO_DIR, DEMO_PARTS, DEMO_GOOD_PARTS, DEMO_PORT (the replay's ZeroMQ port), DEMO_EPOCHS
# (training epochs; unset: trainer fit's default).
set -euo pipefail
OUT=${DEMO_DIR:-build/demo}
PARTS=${DEMO_PARTS:-100}
GOOD=${DEMO_GOOD_PARTS:-400}
PORT=${DEMO_PORT:-5599}
EPOCHS=${DEMO_EPOCHS:-}
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
trainer fit "$OUT/station" --out "$OUT/run" --image-size 64 ${EPOCHS:+--epochs "$EPOCHS"}

echo "== 4/6 evaluate on the conveyor video's parts, labelled by its ground truth (AUROC per defect)"
inspector collect "$OUT/line.mp4" --out "$OUT/station" --config "$OUT/line.toml" --ground-truth "$OUT/line.csv"
trainer evaluate "$OUT/run"

echo "== 5/6 export the scoring path to ONNX (+ manifest), verified against torch"
trainer export "$OUT/run" --out "$OUT/model.onnx"

echo "== 6/6 replay the conveyor video through the inspection pipeline, a listener and the plant gateway attached"
# Free ports for the station's backfill endpoint and the gateway's OPC UA, Modbus and HTTP servers (never
# DEMO_PORT; HTTP on 8080 when it is free).
read -r BACKFILL_PORT OPCUA_PORT MODBUS_PORT HTTP_PORT < <(python3 - "$PORT" <<'EOF'
import socket
import sys

taken, held = {int(sys.argv[1])}, []

def free(preferred: int = 0) -> int:
    while True:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.close()
            preferred = 0
            continue
        held.append(s)                      # kept bound until all four are picked: four different ports
        port = s.getsockname()[1]
        if port not in taken:
            taken.add(port)
            return port
        preferred = 0

print(free(), free(), free(), free(8080))
EOF
)
BACKFILL="tcp://127.0.0.1:$BACKFILL_PORT"
OPCUA="opc.tcp://127.0.0.1:$OPCUA_PORT/inspector"
# --timeout: the demo never waits forever on a listener that heard nothing (it then says so below)
inspector listen "$ENDPOINT" --count "$PARTS" --save "$OUT/failed" --timeout 60 > "$OUT/listen.log" 2>&1 &
LISTENER=$!
inspector gateway --config "$OUT/line.toml" --connect "$ENDPOINT" --backfill "$BACKFILL" --trigger "" \
    --opcua "$OPCUA" --modbus "127.0.0.1:$MODBUS_PORT" --http "127.0.0.1:$HTTP_PORT" --mqtt "" \
    --state "$OUT/gateway" > "$OUT/gateway.log" 2> "$OUT/gateway.err" &
GATEWAY=$!
trap 'kill $LISTENER $GATEWAY 2>/dev/null || true' EXIT
for _ in $(seq 300); do   # it prints one line per endpoint once it serves: feed, OPC UA, modbus, http (<= 30 s)
    if [ "$(wc -l < "$OUT/gateway.log")" -ge 4 ] || ! kill -0 "$GATEWAY" 2>/dev/null; then break; fi
    sleep 0.1
done
if [ "$(wc -l < "$OUT/gateway.log")" -ge 4 ]; then
    sed 's/^/   gateway: /' "$OUT/gateway.log"
else   # the demo goes on without it (e.g. its libraries are missing: pip install -e '.[gateway]')
    echo "   the gateway did not start (see $OUT/gateway.err): going on without it"
    kill "$GATEWAY" 2>/dev/null || true
    wait "$GATEWAY" 2>/dev/null || true
    GATEWAY=
fi
# the first result waits (at most [publish] wait_subscribers_s) until the listener and the gateway have both
# subscribed: with one awaited subscriber, the gateway alone could start the replay before the listener joined
SUBSCRIBERS=$([ -n "$GATEWAY" ] && echo 2 || echo 1)
INSPECTOR_PUBLISH__WAIT_SUBSCRIBERS=$SUBSCRIBERS \
inspector replay "$OUT/line.mp4" --model "$OUT/model.onnx" --config "$OUT/line.toml" \
    --ground-truth "$OUT/line.csv" --publish "$ENDPOINT" --backfill "$BACKFILL" --json "$OUT/replay.json" \
    --state "$OUT/state"
if wait "$LISTENER"; then :; else echo "listener ended with an error (see $OUT/listen.log)"; fi
echo "== verdicts received by the listener ($OUT/listen.log):"
cat "$OUT/listen.log"
if [ -n "$GATEWAY" ]; then
    echo "== the plant gateway, read as a PLC or SCADA system would (an asyncua client, one OPC UA Read):"
    python3 - "$OPCUA" "$OUT/replay.json" <<'EOF' || echo "   could not read the gateway's OPC UA values (see $OUT/gateway.err)"
import asyncio
import json
import logging
import sys
import time

from asyncua import Client

logging.getLogger("asyncua").setLevel(logging.ERROR)    # not its notes on the session's timeout

PATHS = ["Counters/Parts", "Counters/Passed", "Counters/Failed", "Counters/Errors", "State",
         "LastResult/Sequence", "LastResult/PartId", "LastResult/Verdict"]


async def main(url: str, parts: int) -> None:
    async with Client(url, timeout=10) as client:
        ns = await client.get_namespace_index("urn:bigan-inspect:station")
        station = await client.nodes.objects.get_child(f"{ns}:Station")
        nodes = [await station.get_child([f"{ns}:{p}" for p in path.split("/")]) for path in PATHS]
        deadline = time.monotonic() + 15          # it may still be taking the last results in
        while (values := await client.read_values(nodes))[0] < parts and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for path, value in zip(PATHS, values):
            print(f"   Objects/Station/{path:<20} {value}")


with open(sys.argv[2]) as f:
    asyncio.run(main(sys.argv[1], json.load(f)["parts"]))
EOF
    echo "   OPC UA: $OPCUA (anonymous, localhost only); Modbus TCP: 127.0.0.1:$MODBUS_PORT, unit 1"
    echo "   web page and /metrics: http://127.0.0.1:$HTTP_PORT/ while the gateway runs (it stops with the demo;"
    echo "   to look at its history again: inspector gateway --config $OUT/line.toml --state $OUT/gateway"
    echo "   --backfill '' --opcua '' --modbus '' --http 127.0.0.1:$HTTP_PORT; docs/plant.md)"
    kill -TERM "$GATEWAY"
    if wait "$GATEWAY"; then echo "   gateway stopped (exit 0)"; else echo "   gateway exited with $? (see $OUT/gateway.err)"; fi
fi
trap - EXIT
echo "== done: $OUT/run/metrics.json, $OUT/model.onnx, $OUT/replay.json"
