"""Password hashes for the gateway's users (OPC UA and the web page), as written in the TOML configuration.

Format: `scrypt$N$r$p$SALT$HASH` (SALT and HASH in unpadded URL-safe base64), made by
`inspector gateway-passwd USER`. scrypt (hashlib, OpenSSL) with a random 16-byte salt; verification
recomputes with the stored parameters and compares in constant time (hmac.compare_digest). A malformed
stored value never matches (and never raises).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import re
import sys
from typing import TextIO

from inspector.errors import InspectorError

PREFIX = "scrypt"
N, R, P = 2**14, 8, 1          # 16 MiB, ~50 ms: RFC 7914's interactive-login parameters
DKLEN = 32
MAX_N = 2**20                  # refuse stored parameters that would take seconds or gigabytes
MAX_PASSWORD = 1024            # bytes: a longer "password" is refused, never hashed


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * 1024 * 1024)


def hash_password(password: str) -> str:
    """The stored form of `password` (a new random salt each call)."""
    raw = password.encode("utf-8")
    if not raw:
        raise ValueError("the password is empty")
    if len(raw) > MAX_PASSWORD:
        raise ValueError(f"the password is longer than {MAX_PASSWORD} bytes")
    salt = os.urandom(16)
    return f"{PREFIX}${N}${R}${P}${_b64(salt)}${_b64(_scrypt(raw, salt, N, R, P, DKLEN))}"


def is_hash(stored: str) -> bool:
    """Whether `stored` looks like a hash_password() value (configuration validation)."""
    return _parse(stored) is not None


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = stored.split("$") if isinstance(stored, str) else []
    if len(parts) != 6 or parts[0] != PREFIX or not all(x.isdigit() for x in parts[1:4]):
        return None
    n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
    if n < 2 or n & (n - 1) or n > MAX_N or not 1 <= r <= 32 or not 1 <= p <= 16:
        return None
    try:
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        return None
    if len(salt) < 8 or len(digest) != DKLEN:
        return None
    return n, r, p, salt, digest


def verify_password(stored: str, password: str) -> bool:
    """Whether `password` matches the stored hash; False for a malformed hash or an over-long password."""
    parsed = _parse(stored)
    if parsed is None or not isinstance(password, str):
        return False
    raw = password.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_PASSWORD:
        return False
    n, r, p, salt, digest = parsed
    try:
        candidate = _scrypt(raw, salt, n, r, p, len(digest))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(candidate, digest)


def read_password(stdin: TextIO | None = None) -> str:
    """The password for `inspector gateway-passwd`: asked twice without echo on a terminal, else the
    first line of stdin (a script: `echo "$PW" | inspector gateway-passwd operator`)."""
    stream = stdin or sys.stdin
    if stream.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise InspectorError("gateway-passwd: the two passwords differ")
        return first
    return stream.readline().rstrip("\r\n")


def passwd_line(user: str, password: str) -> str:
    """`USER = "scrypt$..."`: the line for [gateway.opcua.users] or [gateway.http.users]."""
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", user):
        raise InspectorError(f"gateway-passwd: user {user!r}: 1-64 letters, digits, '_', '.', '@' or '-'")
    try:
        stored = hash_password(password)
    except ValueError as e:
        raise InspectorError(f"gateway-passwd: {e}") from None
    key = user if re.fullmatch(r"[A-Za-z0-9_-]+", user) else f'"{user}"'
    return f'{key} = "{stored}"'
