#!/usr/bin/env bash
# Install the inspector on an edge box (x86 + NVIDIA GPU, Jetson with JetPack 6, or CPU only) as root:
#   sudo deploy/install.sh MODEL.onnx [--station NAME] [--config FILE] [--prefix DIR] [--no-engine] [--no-start]
# Creates the `inspector` user, a venv with the core package (no torch), builds the TensorRT engine on
# this box, installs the unit and the configuration, checks it, and starts the service.
set -euo pipefail

PREFIX=/opt/inspector
STATION=""
CONFIG_SRC=""
BUILD_ENGINE=1
START=1
MODEL=""
SRC="$(cd "$(dirname "$0")/.." && pwd)"

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "install: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --station) STATION="$2"; shift 2 ;;
        --config) CONFIG_SRC="$2"; shift 2 ;;
        --prefix) PREFIX="$2"; shift 2 ;;
        --no-engine) BUILD_ENGINE=0; shift ;;
        --no-start) START=0; shift ;;
        -h|--help) usage ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) MODEL="$1"; shift ;;
    esac
done
[ -n "$MODEL" ] || usage
[ "$(id -u)" -eq 0 ] || die "run as root (sudo)"
[ -f "$MODEL" ] || die "no model $MODEL"
MANIFEST="${MODEL%.onnx}.json"
[ -f "$MANIFEST" ] || die "no manifest $MANIFEST beside $MODEL (trainer export writes both)"

JETSON=0
if [ -f /etc/nv_tegra_release ] || grep -qsi tegra /proc/device-tree/compatible; then JETSON=1; fi
GPU=0
if [ "$JETSON" = 1 ] || command -v nvidia-smi >/dev/null 2>&1; then GPU=1; fi
echo "== edge box: jetson=$JETSON gpu=$GPU prefix=$PREFIX station=${STATION:-<single>}"

echo "== 1/6 service user"
if ! id inspector >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/inspector --no-create-home --shell /usr/sbin/nologin inspector
fi
for g in video render; do getent group "$g" >/dev/null && usermod -aG "$g" inspector; done

echo "== 2/6 virtual environment and the core package (no torch)"
install -d -m 0755 "$PREFIX"
rm -rf "$PREFIX/src"
mkdir -p "$PREFIX/src"
# a copy of the source, so the venv does not depend on where this checkout lives
tar -C "$SRC" --exclude=.venv --exclude=.git --exclude=build --exclude=runs -cf - . | tar -C "$PREFIX/src" -xf -
if [ "$JETSON" = 1 ]; then
    # JetPack's TensorRT Python bindings live in the system Python: the venv must see them.
    python3 -c "import tensorrt" 2>/dev/null || die "JetPack's python3-libnvinfer (TensorRT) is missing: apt install nvidia-jetpack"
    python3 -m venv --system-site-packages "$PREFIX/venv"
else
    python3 -m venv "$PREFIX/venv"
fi
PIP="$PREFIX/venv/bin/pip"
"$PIP" install --quiet --upgrade pip
"$PIP" install --quiet "$PREFIX/src"
if [ "$GPU" = 1 ]; then
    if [ "$JETSON" = 1 ]; then
        # pycuda builds against the local CUDA (JetPack puts it in /usr/local/cuda).
        PATH="/usr/local/cuda/bin:$PATH" "$PIP" install --quiet pycuda
    else
        "$PIP" install --quiet "$PREFIX/src[tensorrt]"
    fi
fi
"$PREFIX/venv/bin/python" -c "import inspector, engines" || die "the package does not import"

echo "== 3/6 model and engine (built here: TensorRT engines are not portable between GPUs)"
STATE=/var/lib/inspector${STATION:+/$STATION}
install -d -o inspector -g inspector -m 0750 /var/lib/inspector "$STATE" "$STATE/models"
install -o inspector -g inspector -m 0640 "$MODEL" "$STATE/models/model.onnx"
install -o inspector -g inspector -m 0640 "$MANIFEST" "$STATE/models/model.json"
ENGINE_PATH="$STATE/models/model.onnx"
if [ "$GPU" = 1 ] && [ "$BUILD_ENGINE" = 1 ]; then
    runuser -u inspector -- "$PREFIX/venv/bin/engines" build "$STATE/models/model.onnx" \
        --out "$STATE/models/model.engine" --fp16
    ENGINE_PATH="$STATE/models/model.engine"
else
    echo "   no GPU (or --no-engine): the daemon uses ONNX Runtime on the CPU"
fi

echo "== 4/6 configuration"
install -d -m 0755 /etc/inspector
NAME=${STATION:-inspector}
CONF=/etc/inspector/$NAME.toml
if [ -e "$CONF" ]; then
    echo "   keeping the existing $CONF"
else
    install -m 0644 "${CONFIG_SRC:-$SRC/deploy/inspector.toml}" "$CONF"
    sed -i "s#^path = .*#path = \"$ENGINE_PATH\"#" "$CONF"
    [ -n "$STATION" ] && sed -i "s#^station_id = .*#station_id = \"$STATION\"#" "$CONF"
    echo "   wrote $CONF: set camera.source and the ROIs for this line"
fi
[ -e "/etc/inspector/$NAME.env" ] || install -m 0640 /dev/null "/etc/inspector/$NAME.env"

echo "== 5/6 systemd units"
install -m 0644 "$SRC/systemd/inspector.service" "$SRC/systemd/inspector@.service" /etc/systemd/system/
if [ "$PREFIX" != /opt/inspector ]; then
    sed -i "s#/opt/inspector#$PREFIX#g" /etc/systemd/system/inspector.service /etc/systemd/system/inspector@.service
fi
if [ "$JETSON" = 1 ]; then
    for unit in inspector.service inspector@.service; do
        install -d "/etc/systemd/system/$unit.d"
        install -m 0644 "$SRC/deploy/jetson-devices.conf" "/etc/systemd/system/$unit.d/jetson-devices.conf"
    done
fi
systemctl daemon-reload

echo "== 6/6 check the configuration as the service user"
runuser -u inspector -- "$PREFIX/venv/bin/inspector" check-config "$CONF"

UNIT=inspector.service
[ -n "$STATION" ] && UNIT="inspector@$STATION.service"
if [ "$START" = 1 ]; then
    systemctl enable --now "$UNIT"
    systemctl --no-pager status "$UNIT" || true
fi
echo "== done: $UNIT, config $CONF, logs: journalctl -u $UNIT -f, results: $PREFIX/venv/bin/inspector listen tcp://127.0.0.1:5556"
