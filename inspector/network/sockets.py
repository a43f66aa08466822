"""The one way the daemon serves a socket: a thread that owns it.

A ZeroMQ socket must be used by one thread only, so the thread that serves it also creates, secures and
binds it. `start()` waits until that thread reports back: it returns once the socket is bound (the
endpoint, with a `tcp://…:*` port resolved, is in `endpoint`), or raises the bind or CURVE error in the
starter's thread, where the caller can say which configuration field is wrong (`label`).

    class Echo(SocketThread):
        def make_socket(self) -> zmq.Socket: return self.context.socket(zmq.REP)
        def serve(self, sock: zmq.Socket | None) -> None:
            while not self.halted.is_set(): ...

Used by the result publisher, the external-trigger input and the backfill endpoint.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TypeVar

import zmq

from inspector.network.security import apply_server_curve

T = TypeVar("T", bound="SocketThread")


class SocketThread(threading.Thread):
    """A daemon thread owning one server socket: make it, apply CURVE (with `curve_secret`), bind it to
    `bind_endpoint`, report ready or the error, then `serve` it and close it when `serve` returns.

    An empty `bind_endpoint` binds nothing: `serve` gets None (a publisher without a socket still runs)."""

    def __init__(self, name: str, context: zmq.Context, bind_endpoint: str, *, label: str,
                 curve_secret: str | Path | None = None, bind_timeout_s: float | None = 10.0) -> None:
        super().__init__(name=name, daemon=True)
        self.context = context
        self.bind_endpoint = bind_endpoint
        self.curve_secret = curve_secret  # the station's key pair: a CURVE server when set
        self.label = label  # where the endpoint is configured, for error messages: "publish.bind tcp://…"
        self.bind_timeout_s = bind_timeout_s
        self.endpoint: str | None = None  # as bound (a wildcard port resolved)
        self.bound = threading.Event()  # set once the socket is bound, or binding failed
        self.bind_error: BaseException | None = None
        self.halted = threading.Event()

    # --- what a server defines -------------------------------------------------------------------
    def make_socket(self) -> zmq.Socket:
        """A new socket of the server's type with its options set (called in the owning thread)."""
        raise NotImplementedError

    def serve(self, sock: zmq.Socket | None) -> None:
        """The thread's work once bound; return when `halted` is set (or the work is done)."""
        raise NotImplementedError

    # --- life cycle -------------------------------------------------------------------------------
    def start(self: T) -> T:  # type: ignore[override]
        """Start the thread; return once its socket is bound, or raise the bind/CURVE error here."""
        super().start()
        self.bound.wait(self.bind_timeout_s)
        if self.bind_error is not None:
            raise self.bind_error
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask `serve` to return and wait up to `timeout` seconds for the thread to end (if it started)."""
        self.halted.set()
        if self.ident is not None and self is not threading.current_thread():
            self.join(timeout)

    def run(self) -> None:
        sock = None
        if self.bind_endpoint:
            try:
                sock = self._bind()
            except Exception as exc:  # an endpoint in use or invalid, a key that cannot be read
                self.bind_error = exc
                self.bound.set()
                return
            self.endpoint = sock.last_endpoint.decode()
        self.bound.set()
        try:
            self.serve(sock)
        finally:
            if sock is not None:
                sock.close()  # a socket left open would hang the context's term()

    def _bind(self) -> zmq.Socket:
        sock = self.make_socket()
        try:
            if self.curve_secret is not None:
                apply_server_curve(sock, self.curve_secret)
            sock.bind(self.bind_endpoint)
        except BaseException:
            sock.close(0)
            raise
        return sock
