#!/usr/bin/env bash
# Install the inspector on an edge box (x86 + NVIDIA GPU, Jetson with JetPack 6, or CPU only) as root:
#   sudo deploy/install.sh MODEL.onnx [--station NAME] [--config FILE] [--prefix DIR] [--no-engine] [--no-start] [--gateway]
#   deploy/install.sh --plan [--prefix DIR] [--no-engine] [--gateway]   what this box would get (platform, CUDA,
#                                                            the exact pip command); changes nothing, needs no root
# Creates the `inspector` user, a venv with the core package (no torch) and, on a GPU box, TensorRT + pycuda for
# its platform, builds the TensorRT engine on this box, installs the unit and the configuration, checks it,
# and starts the service. --gateway also installs the plant gateway's libraries (the `gateway` extra) and
# starts inspector-gateway(@NAME).service (docs/plant.md); its units are installed either way.
set -euo pipefail

PREFIX=/opt/inspector
STATION=""
CONFIG_SRC=""
BUILD_ENGINE=1
START=1
PLAN=0
GATEWAY=0
MODEL=""
SRC="$(cd "$(dirname "$0")/.." && pwd)"
# where the platform is read from (overridable for tests)
TEGRA_RELEASE=${INSTALL_TEGRA_RELEASE:-/etc/nv_tegra_release}
CUDA_HOME=${INSTALL_CUDA_HOME:-/usr/local/cuda}
NVIDIA_SMI=${INSTALL_NVIDIA_SMI:-nvidia-smi}

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
die() { echo "install: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --station) STATION="$2"; shift 2 ;;
        --config) CONFIG_SRC="$2"; shift 2 ;;
        --prefix) PREFIX="$2"; shift 2 ;;
        --no-engine) BUILD_ENGINE=0; shift ;;
        --no-start) START=0; shift ;;
        --plan) PLAN=1; shift ;;
        --gateway) GATEWAY=1; shift ;;
        -h|--help) usage ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) MODEL="$1"; shift ;;
    esac
done

# ---- what this box is ---------------------------------------------------------------------------------------
JETSON=0
L4T=""
if [ -f "$TEGRA_RELEASE" ]; then
    JETSON=1
    # "# R36 (release), REVISION: 4.0, GCID: ..." -> 36.4.0
    L4T=$(sed -n 's/^# R\([0-9]*\) (release), REVISION: \([0-9.]*\).*/\1.\2/p' "$TEGRA_RELEASE" | head -n1)
fi
GPU=0
DRIVER_CUDA=""
if [ "$JETSON" = 1 ]; then
    GPU=1
elif "$NVIDIA_SMI" >/dev/null 2>&1; then
    GPU=1
    DRIVER_CUDA=$("$NVIDIA_SMI" 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9.]*\).*/\1/p' | head -n1 || true)
fi

# The CUDA toolkit (pycuda compiles against it): nvcc, else CUDA's version.json, else version.txt.
CUDA_VERSION=""
CUDA_SOURCE=""
CUDA_ROOT=""
NVCC="$CUDA_HOME/bin/nvcc"
[ -x "$NVCC" ] || NVCC=$(command -v nvcc 2>/dev/null || true)
if [ -n "$NVCC" ]; then
    CUDA_VERSION=$("$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p' | head -n1 || true)
    if [ -n "$CUDA_VERSION" ]; then
        CUDA_SOURCE=$NVCC
        CUDA_ROOT=$(cd "$(dirname "$NVCC")/.." && pwd)
    fi
fi
if [ -z "$CUDA_VERSION" ] && [ -f "$CUDA_HOME/version.json" ]; then
    CUDA_VERSION=$(python3 -c 'import json, sys
print(".".join(json.load(open(sys.argv[1]))["cuda"]["version"].split(".")[:2]))' "$CUDA_HOME/version.json" \
        2>/dev/null || true)
    [ -n "$CUDA_VERSION" ] && CUDA_SOURCE="$CUDA_HOME/version.json" && CUDA_ROOT=$CUDA_HOME
fi
if [ -z "$CUDA_VERSION" ] && [ -f "$CUDA_HOME/version.txt" ]; then
    CUDA_VERSION=$(sed -n 's/^CUDA Version \([0-9]*\.[0-9]*\).*/\1/p' "$CUDA_HOME/version.txt" | head -n1)
    [ -n "$CUDA_VERSION" ] && CUDA_SOURCE="$CUDA_HOME/version.txt" && CUDA_ROOT=$CUDA_HOME
fi
CUDA_MAJOR=${CUDA_VERSION%%.*}

# ---- what it gets: venv flags, the pip target (with its extra) and the environment pycuda's build needs -------
VENV_FLAGS=()
PIP_ENV=()
EXTRA=""
TRT_NOTE="none: the daemon uses ONNX Runtime on the CPU"
NEEDS=""
if [ "$GPU" = 1 ] && [ "$BUILD_ENGINE" = 0 ]; then
    PLATFORM="GPU present, --no-engine: ONNX Runtime only (rerun without --no-engine to add TensorRT)"
    GPU=0
elif [ "$JETSON" = 1 ]; then
    PLATFORM="Jetson (L4T R${L4T:-?})"
    major=${L4T%%.*}
    if [ -z "$major" ] || [ "$major" -lt 36 ]; then
        die "this Jetson runs L4T R${L4T:-?} (JetPack 5 or older), whose TensorRT 8 the engines cannot use: they need TensorRT 10 (JetPack 6, L4T R36); upgrade to JetPack 6, or rerun with --no-engine to run ONNX Runtime on the CPU"
    fi
    [ -n "$CUDA_VERSION" ] || die "pycuda compiles against JetPack's CUDA toolkit, which is missing (no $CUDA_HOME/bin/nvcc): sudo apt install nvidia-jetpack (or cuda-toolkit-12-6), then rerun; or rerun with --no-engine"
    # JetPack's TensorRT Python bindings live in the system Python (apt, python3-libnvinfer): the venv must see
    # them, and pip must never install another TensorRT over them.
    VENV_FLAGS=(--system-site-packages)
    EXTRA="jetson"
    TRT_NOTE="JetPack's python3-libnvinfer (apt), seen through a venv made with --system-site-packages"
    if ! python3 -c "import tensorrt" >/dev/null 2>&1; then
        NEEDS="JetPack's TensorRT for python3 is missing: sudo apt install python3-libnvinfer (part of nvidia-jetpack)"
    fi
elif [ "$GPU" = 1 ]; then
    PLATFORM="$(uname -m) GPU (driver CUDA ${DRIVER_CUDA:-unknown})"
    if [ -z "$CUDA_VERSION" ]; then
        want=${DRIVER_CUDA%%.*}
        toolkit="cuda-toolkit-${want:-12}-${DRIVER_CUDA#*.}"
        [ -n "$DRIVER_CUDA" ] || toolkit="cuda-toolkit-12-x (the CUDA version nvidia-smi reports)"
        die "pycuda compiles against the CUDA toolkit and none is here (no nvcc in $CUDA_HOME/bin or on PATH, no $CUDA_HOME/version.json); the driver supports CUDA ${DRIVER_CUDA:-?}: install $toolkit from NVIDIA's CUDA repository, then rerun; or rerun with --no-engine to run ONNX Runtime on the CPU"
    fi
    case "$CUDA_MAJOR" in
        12) EXTRA="tensorrt-cu12" ;;
        13) EXTRA="tensorrt-cu13" ;;
        *) die "CUDA $CUDA_VERSION toolkit here ($CUDA_SOURCE): the TensorRT 10/11 wheels this package uses exist for CUDA 12 or 13 only; install CUDA 12 or 13 (the driver must support it), or rerun with --no-engine" ;;
    esac
    TRT_NOTE="pip wheels $EXTRA (TensorRT 10/11 built for CUDA $CUDA_MAJOR, libraries included)"
    if [ -n "$DRIVER_CUDA" ] && [ "${DRIVER_CUDA%%.*}" -lt "$CUDA_MAJOR" ]; then
        NEEDS="the driver supports CUDA $DRIVER_CUDA, older than the CUDA $CUDA_VERSION toolkit: update the NVIDIA driver"
    fi
else
    PLATFORM="CPU only"
fi
TARGET="$PREFIX/src${EXTRA:+[$EXTRA]}"
if [ "$GPU" = 1 ]; then
    PIP_ENV=(CUDA_ROOT="$CUDA_ROOT" PATH="$CUDA_ROOT/bin:$PATH")
fi
PIP="$PREFIX/venv/bin/pip"

if [ "$PLAN" = 1 ]; then
    echo "platform: $PLATFORM"
    [ "$GPU" = 1 ] && echo "cuda: $CUDA_VERSION (from $CUDA_SOURCE)"
    echo "tensorrt: $TRT_NOTE"
    echo "venv: python3 -m venv ${VENV_FLAGS[*]+${VENV_FLAGS[*]} }$PREFIX/venv"
    if [ "$GPU" = 1 ]; then
        echo "pip: CUDA_ROOT=$CUDA_ROOT PATH=$CUDA_ROOT/bin:\$PATH $PIP install '$TARGET'"
        echo "engine: engines build model.onnx --out model.engine --fp16 (max batch 32, opt batch 8), as user inspector"
    else
        echo "pip: $PIP install '$TARGET'"
    fi
    [ "$GATEWAY" = 0 ] || echo "gateway: $PIP install '$PREFIX/src[gateway]', inspector-gateway${STATION:+@$STATION}.service"
    [ -z "$NEEDS" ] || echo "needs: $NEEDS"
    exit 0
fi

[ -n "$MODEL" ] || usage
[ "$(id -u)" -eq 0 ] || die "run as root (sudo)"
[ -f "$MODEL" ] || die "no model $MODEL"
MANIFEST="${MODEL%.onnx}.json"
[ -f "$MANIFEST" ] || die "no manifest $MANIFEST beside $MODEL (trainer export writes both)"
if [ -n "$NEEDS" ]; then
    [ "$JETSON" = 1 ] && die "$NEEDS"       # without JetPack's TensorRT there is nothing to build with
    echo "   warning: $NEEDS"
fi
echo "== edge box: $PLATFORM, gpu=$GPU${CUDA_VERSION:+ cuda=$CUDA_VERSION} prefix=$PREFIX station=${STATION:-<single>}"

echo "== 1/6 service user"
if ! id inspector >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/inspector --no-create-home --shell /usr/sbin/nologin inspector
fi
for g in video render; do getent group "$g" >/dev/null && usermod -aG "$g" inspector; done

echo "== 2/6 virtual environment, the core package (no torch) and the platform's TensorRT packages"
install -d -m 0755 "$PREFIX"
rm -rf "$PREFIX/src"
mkdir -p "$PREFIX/src"
# a copy of the source, so the venv does not depend on where this checkout lives
tar -C "$SRC" --exclude=.venv --exclude=.git --exclude=build --exclude=runs -cf - . | tar -C "$PREFIX/src" -xf -
python3 -m venv ${VENV_FLAGS[@]+"${VENV_FLAGS[@]}"} "$PREFIX/venv"
"$PIP" install --quiet --upgrade pip
echo "   $PIP install '$TARGET'${PIP_ENV[*]+ (with ${PIP_ENV[*]})}"
env ${PIP_ENV[@]+"${PIP_ENV[@]}"} "$PIP" install --quiet "$TARGET" \
    || die "pip install '$TARGET' failed (see above); pycuda needs a C++ compiler and Python headers: apt install build-essential python3-dev"
"$PREFIX/venv/bin/python" -c "import inspector, engines" || die "the package does not import"
if [ "$GATEWAY" = 1 ]; then     # the plant gateway: OPC UA, Modbus, web page, MQTT libraries
    echo "   $PIP install '$PREFIX/src[gateway]'"
    "$PIP" install --quiet "$PREFIX/src[gateway]" || die "pip install '$PREFIX/src[gateway]' failed (see above)"
fi
if [ "$GPU" = 1 ]; then
    why=$("$PREFIX/venv/bin/python" -c 'from engines.tensorrt_engine import tensorrt_available as t
ok, why = t(); print(why); raise SystemExit(0 if ok else 1)') || die "TensorRT backend not usable after the install: $why"
    echo "   TensorRT backend: $why"
fi

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
GATEWAY_UNITS="inspector-gateway.service inspector-gateway@.service"
for unit in inspector.service inspector@.service $GATEWAY_UNITS; do
    install -m 0644 "$SRC/systemd/$unit" /etc/systemd/system/
    [ "$PREFIX" = /opt/inspector ] || sed -i "s#/opt/inspector#$PREFIX#g" "/etc/systemd/system/$unit"
done
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
    if [ "$GATEWAY" = 1 ]; then
        GW_UNIT="inspector-gateway${STATION:+@$STATION}.service"
        systemctl enable --now "$GW_UNIT"
        systemctl --no-pager status "$GW_UNIT" || true
    fi
fi
echo "== done: $UNIT, config $CONF, logs: journalctl -u $UNIT -f, results: $PREFIX/venv/bin/inspector listen tcp://127.0.0.1:5556"
