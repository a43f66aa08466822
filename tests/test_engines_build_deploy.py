"""What the GPU stack installs per platform (deploy/install.sh --plan), the extras it names, and
scripts/gpu_check.sh's one-line refusal where there is no GPU or no TensorRT.

The platforms are faked with files (/etc/nv_tegra_release, CUDA's version.json) and stand-in commands
(nvidia-smi, nvcc) in a temporary folder; nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engines.tensorrt_engine import tensorrt_available

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "deploy" / "install.sh"
GPU_CHECK = ROOT / "scripts" / "gpu_check.sh"
SMI_12 = "+---+\n| NVIDIA-SMI 550.54.14   Driver Version: 550.54.14   CUDA Version: 12.4 |\n"


def _command(folder: Path, name: str, output: str, code: int = 0) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {code}\n")
    path.chmod(0o755)


@pytest.fixture
def box(tmp_path: Path) -> dict[str, Path]:
    bin_dir, cuda = tmp_path / "bin", tmp_path / "cuda"
    bin_dir.mkdir()
    (cuda / "bin").mkdir(parents=True)
    return {"bin": bin_dir, "cuda": cuda, "tegra": tmp_path / "nv_tegra_release", "smi": bin_dir / "nvidia-smi"}


def _plan(box: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{box['bin']}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"),
           "INSTALL_TEGRA_RELEASE": str(box["tegra"]), "INSTALL_CUDA_HOME": str(box["cuda"]),
           "INSTALL_NVIDIA_SMI": str(box["smi"])}
    return subprocess.run(["bash", str(INSTALL), "--plan"], capture_output=True, text=True, env=env, timeout=60)


def test_x86_cuda12_box_gets_the_cu12_extra(box: dict[str, Path]) -> None:
    _command(box["bin"], "nvidia-smi", SMI_12)
    (box["cuda"] / "version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "12.4.1"}}')
    r = _plan(box)
    assert r.returncode == 0, r.stderr
    assert "GPU (driver CUDA 12.4)" in r.stdout and "cuda: 12.4" in r.stdout
    assert "src[tensorrt-cu12]" in r.stdout and f"CUDA_ROOT={box['cuda']}" in r.stdout


def test_x86_cuda13_box_gets_the_cu13_extra(box: dict[str, Path]) -> None:
    _command(box["bin"], "nvidia-smi", SMI_12.replace("12.4", "13.0"))
    _command(box["cuda"] / "bin", "nvcc", "nvcc: NVIDIA (R) Cuda compiler driver\n"
             "Cuda compilation tools, release 13.0, V13.0.48")
    r = _plan(box)
    assert r.returncode == 0, r.stderr
    assert "cuda: 13.0" in r.stdout and "src[tensorrt-cu13]" in r.stdout


def test_jetpack6_uses_the_apt_tensorrt_and_installs_pycuda_only(box: dict[str, Path]) -> None:
    box["tegra"].write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n")
    _command(box["cuda"] / "bin", "nvcc", "Cuda compilation tools, release 12.6, V12.6.68")
    r = _plan(box)
    assert r.returncode == 0, r.stderr
    assert "platform: Jetson (L4T R36.4.0)" in r.stdout and "cuda: 12.6" in r.stdout
    assert "python3-libnvinfer" in r.stdout and "--system-site-packages" in r.stdout
    assert "src[jetson]" in r.stdout and "tensorrt-cu12" not in r.stdout


@pytest.mark.parametrize(("setup", "needles"), [
    ("jetpack5", ["L4T R35", "JetPack 6"]),
    ("no-toolkit", ["nvcc", "cuda-toolkit-12", "--no-engine"]),
    ("cuda11", ["CUDA 11.8", "12 or 13"]),
])
def test_unservable_gpu_boxes_stop_with_one_line(box: dict[str, Path], setup: str, needles: list[str]) -> None:
    if setup == "no-toolkit" and shutil.which("nvcc", path="/usr/bin:/bin"):
        pytest.skip("a real nvcc in /usr/bin")
    if setup == "jetpack5":
        box["tegra"].write_text("# R35 (release), REVISION: 5.0, GCID: 1, BOARD: t186ref, EABI: aarch64\n")
        _command(box["cuda"] / "bin", "nvcc", "Cuda compilation tools, release 11.4, V11.4.315")
    else:
        _command(box["bin"], "nvidia-smi", SMI_12)
    if setup == "cuda11":
        (box["cuda"] / "version.json").write_text('{"cuda": {"name": "CUDA SDK", "version": "11.8.0"}}')
    r = _plan(box)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and r.stderr.startswith("install: "), r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr


def test_cpu_box_installs_the_core_package_only(box: dict[str, Path]) -> None:
    r = _plan(box)
    assert r.returncode == 0, r.stderr
    assert "platform: CPU only" in r.stdout and "'/opt/inspector/src'" in r.stdout and "[" not in r.stdout


def test_the_extras_pin_tensorrt_per_cuda_major() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("tensorrt-cu12>=10") and "<" in r for r in extras["tensorrt-cu12"])
    assert any(r.startswith("tensorrt-cu13>=") and "<" in r for r in extras["tensorrt-cu13"])
    assert extras["jetson"] == [r for r in extras["jetson"] if r.startswith("pycuda")]   # TensorRT comes from apt
    for name, reqs in extras.items():
        assert not [r for r in reqs if r.replace(" ", "").startswith("tensorrt>=")], f"{name}: unbounded tensorrt"


# ---------------------------------------------------------------- scripts/gpu_check.sh

def _gpu_check(tmp_path: Path, smi: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GPU_CHECK_NVIDIA_SMI": str(smi), "GPU_CHECK_TEGRA_RELEASE": str(tmp_path / "none"),
           "PY": sys.executable}
    return subprocess.run(["bash", str(GPU_CHECK), str(tmp_path / "demo"), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=120)


def test_gpu_check_without_a_gpu_fails_in_one_line(tmp_path: Path) -> None:
    r = _gpu_check(tmp_path, tmp_path / "no-nvidia-smi")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("gpu_check: no NVIDIA GPU here") and not (tmp_path / "out").exists()


@pytest.mark.skipif(tensorrt_available()[0], reason="TensorRT usable here: the check would run in full")
def test_gpu_check_with_a_gpu_but_no_tensorrt_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    _command(tmp_path / "bin", "nvidia-smi", "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)")
    r = _gpu_check(tmp_path, tmp_path / "bin" / "nvidia-smi")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "TensorRT backend not usable" in r.stderr and "not importable" in r.stderr
