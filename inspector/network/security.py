"""CURVE security for the daemon's sockets: station key pairs, server/client socket setup and a ZAP
authenticator in modes off, stonehouse (any CURVE client) and ironhouse (allow-listed client keys)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Literal

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

Mode = Literal["off", "stonehouse", "ironhouse"]
MODES: tuple[str, ...] = ("off", "stonehouse", "ironhouse")


class SecurityError(Exception):
    """Keys or the security configuration are missing, unsafe or invalid (a configuration error)."""


def keygen(directory: str | Path, name: str = "station", *, force: bool = False) -> tuple[Path, Path]:
    """Write `<name>.key` (public, shareable) and `<name>.key_secret` (mode 0600) into `directory`.

    The pair is made in a private temporary folder and moved in, so the secret is never readable by
    others, not even for a moment. Refuses to replace an existing pair unless `force`: a new station
    key breaks every client that trusts the old one.
    """
    out = Path(directory)
    public, secret = out / f"{name}.key", out / f"{name}.key_secret"
    if not force and (public.exists() or secret.exists()):
        raise SecurityError(f"{public} or {secret} exists: keep it, or pass force to replace the station key")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".keygen-", dir=out))  # mode 0700
    try:
        tmp_public, tmp_secret = zmq.auth.create_certificates(tmp, name)
        os.chmod(tmp_secret, 0o600)
        os.chmod(tmp_public, 0o644)
        os.replace(tmp_secret, secret)
        os.replace(tmp_public, public)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return public, secret


def load_public(public_file: str | Path) -> bytes:
    """The Z85 public key in a `.key` (or `.key_secret`) certificate file."""
    try:
        public, _ = zmq.auth.load_certificate(public_file)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read public key {public_file}: {exc}") from exc
    return public


def load_keypair(secret_file: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) from a `.key_secret` file that only its owner (and group) can read."""
    path = Path(secret_file)
    try:
        mode = path.stat().st_mode
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"cannot read key pair {path}: {exc}") from exc
    if secret is None:
        raise SecurityError(f"{path} holds no secret key (is it the public .key file?)")
    if mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise SecurityError(f"{path} is accessible by others (mode {stat.filemode(mode)}): chmod 600 {path}")
    return public, secret


def apply_server_curve(socket: zmq.Socket, secret_file: str | Path) -> None:
    """Make `socket` a CURVE server with the station's key pair; call before bind()."""
    public, secret = load_keypair(secret_file)
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    socket.curve_server = True


def apply_client_curve(socket: zmq.Socket, client_secret: str | Path, server_public: str | Path) -> None:
    """Make `socket` a CURVE client that trusts only the station key in `server_public`; call before connect()."""
    public, secret = load_keypair(client_secret)
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    socket.curve_serverkey = load_public(server_public)


def _allow_list(allow_dir: str | Path | None) -> Path:
    if allow_dir is None:
        raise SecurityError("ironhouse needs an allow-list directory of client public keys (*.key)")
    path = Path(allow_dir)
    if not path.is_dir():
        raise SecurityError(f"allow-list directory {path} does not exist")
    if not any(path.glob("*.key")):
        raise SecurityError(f"allow-list directory {path} holds no *.key file: no client could connect")
    return path


def start_authenticator(context: zmq.Context, mode: str, allow_dir: str | Path | None = None,
                        allow_ips: tuple[str, ...] = ()) -> ThreadAuthenticator | None:
    """Start the ZAP handler for `context` (one per context; sockets of that context use it).

    off: no authenticator (sockets stay NULL). stonehouse: any client with CURVE keys, encrypted.
    ironhouse: only clients whose public key is a `*.key` file in `allow_dir` (reload_allow_list after
    changes). `allow_ips` additionally restricts peers by address. Stop it with `.stop()` at shutdown.
    """
    if mode not in MODES:
        raise SecurityError(f"security mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "off":
        return None
    location = str(_allow_list(allow_dir)) if mode == "ironhouse" else zmq.auth.CURVE_ALLOW_ANY
    auth = ThreadAuthenticator(context)
    auth.start()
    if allow_ips:
        auth.allow(*allow_ips)
    auth.configure_curve(domain="*", location=location)
    return auth


def reload_allow_list(auth: ThreadAuthenticator, allow_dir: str | Path) -> int:
    """Re-read the ironhouse allow-list (after adding or removing keys); returns how many keys it holds."""
    path = _allow_list(allow_dir)
    auth.configure_curve(domain="*", location=str(path))
    return len(auth.certs.get("*", {}))
