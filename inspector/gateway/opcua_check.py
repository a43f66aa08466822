"""What the OPC UA server needs from its configuration before it starts, checked without asyncua
(`inspector check-config` runs on a box without the gateway's libraries): whether the endpoint is served
securely, and whether its certificate, key and users are there."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from inspector.errors import InspectorError
from inspector.gateway.config import LOCAL_HOSTS, OpcUaConfig

MAKE_CERT = "make them with `inspector gateway-cert --out DIR --host NAME`"


def is_secure(cfg: OpcUaConfig) -> bool:
    """Whether the endpoint is served with Basic256Sha256 Sign&Encrypt + users only: security
    "sign_encrypt", or "auto" on an endpoint whose host is not localhost."""
    if cfg.security == "auto":
        return (urlparse(cfg.endpoint).hostname or "") not in {h.strip("[]") for h in LOCAL_HOSTS}
    return cfg.security == "sign_encrypt"


def opcua_problems(cfg: OpcUaConfig) -> list[str]:
    """One line per thing missing for a secure endpoint (empty: fine, or no OPC UA server / open endpoint)."""
    if not cfg.endpoint or not is_secure(cfg):
        return []
    why = "is not on localhost, so it" if cfg.security == "auto" else "with security = \"sign_encrypt\""
    where = f"gateway.opcua.endpoint {cfg.endpoint} {why} needs Basic256Sha256"
    if cfg.certificate is None or cfg.private_key is None:
        return [f"{where}: set gateway.opcua.certificate and private_key ({MAKE_CERT})"]
    problems = [f"gateway.opcua.{what} {p} does not exist ({MAKE_CERT})"
                for what, p in (("certificate", cfg.certificate), ("private_key", cfg.private_key))
                if not p.is_file()]
    if cfg.trusted_clients is not None and not cfg.trusted_clients.is_dir():
        problems.append(f"gateway.opcua.trusted_clients {cfg.trusted_clients} is not a folder "
                        "(of the client certificates to trust)")
    if not cfg.users:
        problems.append(f"{where}: add a user to [gateway.opcua.users] (a hash from `inspector gateway-passwd USER`)")
    return problems


def check_security(cfg: OpcUaConfig) -> tuple[Path, Path] | None:
    """The (certificate, private key) of a secure endpoint; None for an open one. InspectorError with the
    first problem (one line) when something is missing."""
    problems = opcua_problems(cfg)
    if problems:
        raise InspectorError(problems[0])
    if not cfg.endpoint or not is_secure(cfg):
        return None
    assert cfg.certificate is not None and cfg.private_key is not None
    return cfg.certificate, cfg.private_key
