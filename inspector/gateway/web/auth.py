"""Login for the web page: read-only needs none; anything that changes state needs a logged-in user and the
session's CSRF token.

- Users and their password hashes: [gateway.http] users (`inspector gateway-passwd`), checked with
  gateway/passwords.py (scrypt, constant-time) in a worker thread, one check at a time, a failed one
  answered after a pause (no fast guessing, an unknown user costs the same as a wrong password).
- The session is one signed cookie (HMAC-SHA256 with a secret random per gateway process: a restarted
  gateway logs everyone out), HttpOnly, SameSite=Strict, 12 h: {user or null, CSRF token, expiry}.
  Every visitor gets an anonymous one from GET /api/session, which also tells the page its CSRF token.
- CSRF: every POST (the login form included) must carry the session's token (form field `csrf` or header
  `X-CSRF-Token`); SameSite=Strict keeps the cookie off other sites' requests, and a POST whose Origin is
  not this server is refused outright. A login issues a new session with a new token (no fixation).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from inspector.gateway.passwords import hash_password, verify_password

COOKIE = "inspector_session"
SESSION_S = 12 * 3600
FAILED_LOGIN_PAUSE_S = 0.5
MAX_FORM_BYTES = 4096
MAX_USER = 64
MAX_PASSWORD = 1024


class AuthError(Exception):
    """A refused request: `status` 401 (not logged in / wrong password) or 403 (CSRF, foreign origin)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Session:
    user: str | None
    csrf: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Checked for an unknown user, so that it costs as much as a known one with a wrong password."""
    return hash_password(secrets.token_urlsafe(16))


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or request.headers.get("x-requested-with") == "fetch"


class Sessions:
    def __init__(self, users: dict[str, str], secret: bytes | None = None) -> None:
        self.users = dict(users)
        self.secret = secret or secrets.token_bytes(32)
        self._checking = asyncio.Semaphore(1)
        self.failed_logins = 0

    # --- the cookie ------------------------------------------------------------------------------
    def _sign(self, payload: bytes) -> str:
        return _b64(hmac.new(self.secret, payload, hashlib.sha256).digest())

    def encode(self, session: Session) -> str:
        payload = json.dumps({"u": session.user, "c": session.csrf, "e": session.expires},
                             separators=(",", ":")).encode()
        return f"{_b64(payload)}.{self._sign(payload)}"

    def read(self, request: Request) -> Session | None:
        """The request's session if its cookie is ours, intact and not expired."""
        raw = request.cookies.get(COOKIE, "")
        body, _, sig = raw.partition(".")
        if not body or not sig or len(raw) > 1024:
            return None
        try:
            payload = _unb64(body)
            if not hmac.compare_digest(self._sign(payload), sig):
                return None
            data = json.loads(payload)
            session = Session(data["u"], str(data["c"]), int(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires < time.time() or (session.user is not None and session.user not in self.users):
            return None
        return session

    @staticmethod
    def new(user: str | None) -> Session:
        return Session(user, secrets.token_urlsafe(24), int(time.time()) + SESSION_S)

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(COOKIE, self.encode(session), max_age=SESSION_S, path="/", httponly=True,
                            samesite="strict")

    # --- checks ----------------------------------------------------------------------------------
    @staticmethod
    def check_origin(request: Request) -> None:
        """A POST from a page of another origin is refused (browsers send Origin on every POST)."""
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
            raise AuthError(403, "cross-origin request refused")

    def require_csrf(self, request: Request, session: Session | None, token: str | None) -> Session:
        self.check_origin(request)
        if session is None:
            raise AuthError(403, "no session: load the page (GET /api/session) first")
        token = token or request.headers.get("x-csrf-token")
        if not token or not hmac.compare_digest(token.encode(), session.csrf.encode()):
            raise AuthError(403, "missing or wrong CSRF token")
        return session

    def require_user(self, request: Request) -> Session:
        """For a state-changing request: a logged-in session (401) and its CSRF token in the header (403)."""
        session = self.read(request)
        if session is None or session.user is None:
            self.check_origin(request)
            raise AuthError(401, "log in first")
        return self.require_csrf(request, session, None)

    async def check_password(self, user: str, password: str) -> bool:
        stored = self.users.get(user)
        async with self._checking:  # one scrypt at a time: logins cannot starve the page of CPU
            ok = await asyncio.to_thread(verify_password, stored or _dummy_hash(), password)
        return ok and stored is not None

    # --- endpoints -------------------------------------------------------------------------------
    async def session_info(self, request: Request) -> Response:
        session = self.read(request)
        fresh = session is None
        if session is None:
            session = self.new(None)
        response = JSONResponse({"user": session.user, "csrf": session.csrf, "login_enabled": bool(self.users)},
                                headers={"cache-control": "no-store"})
        if fresh:
            self.set_cookie(response, session)
        return response

    async def login(self, request: Request) -> Response:
        form = await small_form(request)
        self.require_csrf(request, self.read(request), form.get("csrf"))
        user, password = form.get("user", ""), form.get("password", "")
        if not user or len(user) > MAX_USER or len(password) > MAX_PASSWORD or not await self.check_password(user, password):
            self.failed_logins += 1
            await asyncio.sleep(FAILED_LOGIN_PAUSE_S)
            raise AuthError(401, "wrong user or password")
        session = self.new(user)
        response: Response = (JSONResponse({"user": user, "csrf": session.csrf}) if wants_json(request)
                              else RedirectResponse("/", 303))
        self.set_cookie(response, session)
        return response

    async def logout(self, request: Request) -> Response:
        form = await small_form(request)
        self.require_csrf(request, self.read(request), form.get("csrf"))
        session = self.new(None)
        response: Response = (JSONResponse({"user": None, "csrf": session.csrf}) if wants_json(request)
                              else RedirectResponse("/", 303))
        self.set_cookie(response, session)
        return response

    async def ping(self, request: Request) -> Response:
        """POST /api/ping-authenticated: the first state-changing endpoint's gate, proving login + CSRF."""
        session = self.require_user(request)
        return JSONResponse({"ok": True, "user": session.user, "at": time.time()})


async def small_form(request: Request) -> dict[str, str]:
    """The urlencoded or multipart form of a POST (no files, a few short fields); {} for an empty body."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
        raise AuthError(413, "form too large")
    if not request.headers.get("content-type"):
        return {}
    try:
        form = await request.form(max_files=0, max_fields=8, max_part_size=MAX_FORM_BYTES)
    except Exception as e:  # malformed multipart, too many fields: the client's error
        raise AuthError(400, f"malformed form: {e}") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


def error_response(e: AuthError, request: Request) -> Response:
    if e.status == 401 and not wants_json(request) and request.url.path == "/login":
        return RedirectResponse("/?login=failed", 303)
    headers: dict[str, Any] = {"cache-control": "no-store"}
    return JSONResponse({"error": e.message}, status_code=e.status, headers=headers)
