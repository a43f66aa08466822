"""The systemd units and the Jetson drop-in (issue 22): no group that may not exist, no restart on exit 2,
SIGTERM instead of SIGABRT and no core dump on a watchdog timeout, writable HOME and caches under
ProtectSystem=strict, the Argus camera socket reachable on a Jetson; the plant gateway's units (issue 23):
the station's hardening without any device, their own state folder, after the station; install.sh
installs them; `systemd-analyze verify` where it exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = {"inspector.service": "", "inspector@.service": "/%i"}   # unit -> suffix of its per-station paths
GATEWAY_UNITS = {"inspector-gateway.service": "", "inspector-gateway@.service": "/%i"}
DROP_IN = REPO / "deploy" / "jetson-devices.conf"
EXEC = "/opt/inspector/venv/bin/inspector"


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value assigned, in order (unit files repeat keys: configparser cannot)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(m.group(1), {})
            continue
        assert current is not None and "=" in line, f"{path.name}: {raw!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def last(unit: dict[str, dict[str, list[str]]], key: str, section: str = "Service") -> str | None:
    values = unit.get(section, {}).get(key)
    return values[-1] if values else None


def environment(unit: dict[str, dict[str, list[str]]]) -> dict[str, str]:
    return dict(v.split("=", 1) for v in unit["Service"].get("Environment", []))


@pytest.mark.parametrize("name", list(UNITS))
def test_the_units_settings(name: str) -> None:
    unit = parse_unit(REPO / "systemd" / name)
    suffix = UNITS[name]
    service = unit["Service"]
    # a group missing on the box fails the start with 216/GROUP: the user's own groups only (install.sh)
    assert "SupplementaryGroups" not in service
    # exit 2 (configuration or model) is not restarted; anything else is
    assert "2" in " ".join(service["RestartPreventExitStatus"]).split()
    assert last(unit, "Restart") == "on-failure"
    # a watchdog timeout stops the daemon as `systemctl stop` does, without a core dump
    assert last(unit, "WatchdogSignal") == "SIGTERM" and last(unit, "KillSignal") == "SIGTERM"
    assert last(unit, "LimitCORE") == "0"
    # HOME and the caches are writable under ProtectSystem=strict: the unit's own state and cache folders
    assert last(unit, "ProtectSystem") == "strict" and last(unit, "PrivateTmp") == "yes"
    env = environment(unit)
    assert f"inspector{suffix}" in (last(unit, "StateDirectory") or "").split()
    assert env["HOME"] == f"/var/lib/inspector{suffix}" == last(unit, "WorkingDirectory")
    caches = (last(unit, "CacheDirectory") or "").split()
    assert env["XDG_CACHE_HOME"] == f"/var/cache/{caches[0]}" == f"/var/cache/inspector{suffix}"
    assert env["CUDA_CACHE_PATH"].removeprefix("/var/cache/") in caches   # created by systemd, not by CUDA
    # `systemctl reload` = SIGHUP: the daemon swaps in the configured model without stopping (issue 24)
    assert last(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize("name", list(GATEWAY_UNITS))
def test_the_gateway_units_settings(name: str) -> None:
    unit = parse_unit(REPO / "systemd" / name)
    station = parse_unit(REPO / "systemd" / name.replace("inspector-gateway", "inspector"))
    suffix = GATEWAY_UNITS[name]
    service = unit["Service"]
    assert last(unit, "ExecStart", "Service") == (
        f"{EXEC} gateway --config /etc/inspector/{'inspector' if not suffix else '%i'}.toml")
    assert "SupplementaryGroups" not in service and last(unit, "User") == "inspector"
    assert "2" in " ".join(service["RestartPreventExitStatus"]).split() and last(unit, "Restart") == "on-failure"
    assert last(unit, "Type") == "notify" and last(unit, "WatchdogSignal") == "SIGTERM"
    assert last(unit, "LimitCORE") == "0" and last(unit, "KillSignal") == "SIGTERM"
    # its own state, never the station's journal folder; the path the gateway is told is the one systemd makes
    env = environment(unit)
    assert last(unit, "StateDirectory") == f"inspector-gateway{suffix}"
    assert env["INSPECTOR_GATEWAY__STATE_DIR"] == f"/var/lib/inspector-gateway{suffix}" == env["HOME"]
    assert env["HOME"] == last(unit, "WorkingDirectory")
    assert env["XDG_CACHE_HOME"] == f"/var/cache/{last(unit, 'CacheDirectory')}"
    # the station's journal folder writable (the web page's labels), optional ("-"): its StateDirectory
    assert last(unit, "ReadWritePaths") == f"-/var/lib/{last(station, 'StateDirectory')}"
    # ordered after its station (same instance for the template)
    assert f"inspector{'@%i' if suffix else ''}.service" in (last(unit, "After", "Unit") or "").split()
    # the station's hardening, and no devices at all (no camera, no GPU)
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
                "ProtectHostname", "RestrictNamespaces", "RestrictRealtime", "RestrictSUIDSGID",
                "LockPersonality", "SystemCallArchitectures", "RestrictAddressFamilies", "CapabilityBoundingSet"):
        assert last(unit, key) == last(station, key), key
    assert last(unit, "PrivateDevices") == "yes" and "DeviceAllow" not in service


def test_install_sh_installs_the_gateway_units_and_extra() -> None:
    text = (REPO / "deploy" / "install.sh").read_text()
    for name in GATEWAY_UNITS:
        assert name in text
    assert "src[gateway]" in text and "--gateway" in text
    r = subprocess.run(["bash", str(REPO / "deploy" / "install.sh"), "--plan", "--gateway", "--no-engine"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "src[gateway]" in r.stdout and "inspector-gateway.service" in r.stdout, r.stderr


def test_the_jetson_drop_in_reaches_the_argus_socket() -> None:
    text = DROP_IN.read_text()
    drop_in = parse_unit(DROP_IN)
    assert "/tmp/argus_socket" in text   # nvargus-daemon's socket, which CSI cameras are reached through
    assert last(drop_in, "PrivateTmp") == "no"
    assert last(drop_in, "After", "Unit") == "nvargus-daemon.service"
    # the host's /tmp is read-only under ProtectSystem=strict: temporary files go to the runtime directory
    assert environment(drop_in)["TMPDIR"] == "/run/inspector/%i"
    for name, suffix in UNITS.items():
        runtime = last(parse_unit(REPO / "systemd" / name), "RuntimeDirectory")
        assert f"/run/{runtime}" == f"/run/inspector{suffix}"   # %i is empty for inspector.service
    assert all(d.startswith(("/dev/", "char-")) for d in (v.split()[0] for v in drop_in["Service"]["DeviceAllow"]))


def test_install_sh_adds_only_groups_that_exist() -> None:
    text = (REPO / "deploy" / "install.sh").read_text()
    assert "SupplementaryGroups" not in re.sub(r"#.*", "", text)
    assert re.search(r'getent group "\$g"', text) and 'usermod -aG "$g" inspector' in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """Every unit, plain and with the Jetson drop-in, as systemd itself reads it: no unknown key, no bad value."""
    fake = tmp_path / "bin" / "inspector"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    for jetson in (False, True):
        units = tmp_path / ("jetson" if jetson else "plain")
        units.mkdir()
        for name in UNITS:
            (units / name).write_text((REPO / "systemd" / name).read_text().replace(EXEC, str(fake)))
            if jetson:
                (units / f"{name}.d").mkdir()
                shutil.copy(DROP_IN, units / f"{name}.d" / "jetson-devices.conf")
        shutil.copy(units / "inspector@.service", units / "inspector@line-a.service")
        for name in GATEWAY_UNITS:
            (units / name).write_text((REPO / "systemd" / name).read_text().replace(EXEC, str(fake)))
        shutil.copy(units / "inspector-gateway@.service", units / "inspector-gateway@line-a.service")
        for name in ("inspector.service", "inspector@line-a.service", "inspector-gateway.service",
                     "inspector-gateway@line-a.service"):
            r = subprocess.run(["systemd-analyze", "verify", str(units / name)], capture_output=True, text=True,
                               timeout=60)
            problems = [ln for ln in (r.stdout + r.stderr).splitlines()
                        if re.search(r"unknown|invalid|failed|error|ignoring", ln, re.I)
                        and "nvargus-daemon.service" not in ln]
            assert r.returncode == 0 and not problems, (jetson, name, r.stdout, r.stderr)
