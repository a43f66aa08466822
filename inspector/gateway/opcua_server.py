"""The gateway's OPC UA server (asyncua): the station under `Objects/Station`, a ResultReady/ResultAck
handshake and the method `Inspect(part_id)`; docs/plant.md, section "opcua".

Security (OpcUaConfig.security): "auto" serves anonymous clients without security only when the endpoint's
host is localhost, otherwise only Basic256Sha256 Sign&Encrypt with the server certificate made by
`inspector gateway-cert` and the configured users' passwords (hashes, gateway/passwords.py); anonymous is
then refused. No client is ever an asyncua "admin" (who could write read-only nodes or add nodes): the
user manager below gives every session the plain User role.

The handshake's ResultAck is the one writable variable. A client's write of it goes through asyncua's
value setter (asyncua/server/address_space.py `write_attribute_value`: the type is checked first, then the
setter replaces the store), which acknowledges the presented sequence in the hub or refuses the write with
Bad_OutOfRange (raised, so the Write is answered with that status and nothing is stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.address_space import NodeData

from inspector.errors import InspectorError
from inspector.gateway.config import OpcUaConfig
from inspector.gateway.hub import Handshake, Hub
from inspector.gateway.opcua_cert import certificate_uri, load_certificate
from inspector.gateway.opcua_check import check_security
from inspector.gateway.opcua_nodes import ACK, NodeWriter, build, groups
from inspector.gateway.passwords import verify_password

log = logging.getLogger(__name__)
LOCAL_URI = "urn:bigan-inspect:gateway"
REFRESH_S = 1.0          # station state is also re-read this often (the feed's `connected` has no event)


class Trigger(Protocol):
    async def inspect(self, part_id: str) -> None: ...


class Users:
    """asyncua user manager: anonymous sessions on an open endpoint, the configured users on a secure one
    (anonymous tokens are not even offered there); always the User role, never Admin."""

    def __init__(self, users: dict[str, str] | None) -> None:
        self._users = users

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if self._users is None:
            return User(role=UserRole.User)
        # `certificate` is the secure channel's peer certificate: none means a None (plaintext) channel,
        # which asyncua keeps open for GetEndpoints; a session must be on a Sign&Encrypt one.
        if not certificate:
            log.warning("OPC UA: refused login of %r on an unencrypted channel", username)
            return None
        stored = self._users.get(username or "")
        if stored is None or password is None or not verify_password(stored, password):
            log.warning("OPC UA: refused login of user %r", username)
            return None
        return User(role=UserRole.User, name=username)


def ack_setter(hub: Hub, hs: Handshake) -> Callable[[NodeData, ua.AttributeIds, ua.DataValue], None]:
    """The value setter of Handshake/ResultAck: the presented sequence acknowledges it; writing the
    sequence already acknowledged again (a PLC retrying a write) is accepted and changes nothing; any other
    value is refused with Bad_OutOfRange, a value that is not an integer with Bad_TypeMismatch."""

    def setter(node: NodeData, attr: ua.AttributeIds, value: ua.DataValue) -> None:
        seq = value.Value.Value if value.Value is not None else None
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ua.uaerrors.BadTypeMismatch()
        if seq != hs.acked and not hub.ack(hs.channel, seq):
            raise ua.uaerrors.BadOutOfRange()
        node.attributes[attr].value = value     # the setter replaces asyncua's own store of the value

    return setter


def inspect_method(trigger: Trigger) -> Callable[..., Any]:
    """Station.Inspect(part_id: String): forwards an external trigger (gateway/trigger.py). Bad_InvalidArgument
    for a part id the station would refuse (the forwarder's ValueError: not 1-128 printable characters;
    the input argument's result says Bad_TypeMismatch for a non-string), Bad_CommunicationError when the
    station's trigger endpoint is not connected (nothing is queued for later)."""

    async def inspect(parent: ua.NodeId, *args: Any) -> ua.CallMethodResult | list[ua.Variant]:
        values = [a.Value if isinstance(a, ua.Variant) else a for a in args]
        if len(values) != 1:
            code = ua.StatusCodes.BadArgumentsMissing if not values else ua.StatusCodes.BadTooManyArguments
            return ua.CallMethodResult(StatusCode=ua.StatusCode(code))
        part_id = values[0]

        def bad(arg: int) -> ua.CallMethodResult:
            return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadInvalidArgument),
                                       InputArgumentResults=[ua.StatusCode(arg)])

        if not isinstance(part_id, str):
            return bad(ua.StatusCodes.BadTypeMismatch)
        try:
            await trigger.inspect(part_id)
        except ValueError as e:
            log.warning("OPC UA: Inspect(%r) refused: %s", part_id[:40], e)
            return bad(ua.StatusCodes.BadOutOfRange)
        except ConnectionError as e:
            log.warning("OPC UA: Inspect(%r) not sent: %s", part_id[:40], e)
            return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadCommunicationError))
        except Exception:
            log.exception("OPC UA: Inspect(%r) failed", part_id[:40])
            return ua.CallMethodResult(StatusCode=ua.StatusCode(ua.StatusCodes.BadCommunicationError))
        return []

    return inspect


async def _secure(server: Server, cfg: OpcUaConfig, cert: Path, key: Path) -> str:
    certificate = load_certificate(cert)
    await server.load_certificate(str(cert))
    try:
        await server.load_private_key(str(key))
    except (OSError, ValueError) as e:
        raise InspectorError(f"gateway.opcua.private_key {key}: cannot read it ({e})") from e
    server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
    server.set_identity_tokens([ua.UserNameIdentityToken])
    if cfg.trusted_clients is not None:     # only client certificates in that folder
        store = TrustStore([cfg.trusted_clients], [])
        await store.load()
        server.set_certificate_validator(CertificateValidator(
            CertificateValidatorOptions.TRUSTED_VALIDATION | CertificateValidatorOptions.PEER_CLIENT, store))
    else:                                   # any client certificate in its validity period, URI matching
        server.set_certificate_validator(CertificateValidator(
            CertificateValidatorOptions.BASIC_VALIDATION | CertificateValidatorOptions.PEER_CLIENT))
    return certificate_uri(certificate) or LOCAL_URI


async def serve_opcua(hub: Hub, cfg: OpcUaConfig, trigger: Trigger, ready: Callable[[str], None],
                      station_id: str, *, acked: int = 0,
                      persist: Callable[[str, int], None] = lambda c, s: None) -> None:
    """Serve the station over OPC UA at cfg.endpoint until cancelled; calls `ready(line)` once serving.
    `acked`/`persist`: the handshake's acknowledged sequence and where to store a new one (the store)."""
    if not cfg.endpoint:
        return
    files = check_security(cfg)
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLogger("asyncua").level))
    server = Server(user_manager=Users(cfg.users if files else None))
    await server.init()
    server.allow_remote_admin(False)
    server.set_endpoint(cfg.endpoint)
    server.set_server_name(f"bigan-inspect gateway {station_id}".strip())
    server.product_uri = "urn:bigan-inspect"
    server.manufacturer_name = "bigan-inspect"
    if files:
        uri = await _secure(server, cfg, *files)
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_identity_tokens([ua.AnonymousIdentityToken])
        uri = LOCAL_URI
    await server.set_application_uri(uri)
    idx = await server.register_namespace(cfg.namespace)
    station, ids = await build(server, idx)
    arg = ua.Argument(Name="part_id", DataType=ua.NodeId(ua.ObjectIds.String), ValueRank=ua.ValueRank.Scalar,
                      Description=ua.LocalizedText("the PLC's part id, 1-128 characters"))
    await station.add_method(ua.NodeId("Station.Inspect", idx), ua.QualifiedName("Inspect", idx),
                             inspect_method(trigger), [arg], [])
    hs = hub.handshake("opcua", acked, persist)
    queue = hub.listen()
    writer = NodeWriter(server, ids)
    shown = groups(hub, hs, station_id)
    await writer.write(shown, force=True)
    await server.write_attribute_value(ids[ACK], ua.DataValue(ua.Variant(hs.acked, ua.VariantType.Int64)))
    server.set_attribute_value_setter(ids[ACK], ack_setter(hub, hs))
    try:
        await server.start()
    except OSError as e:
        raise InspectorError(f"gateway.opcua.endpoint {cfg.endpoint}: cannot listen there ({e.strerror or e})") from e
    try:
        port = server.bserver.port if server.bserver else urlparse(cfg.endpoint).port
        mode = "Basic256Sha256 Sign&Encrypt, users" if files else "anonymous, no security"
        ready(f"OPC UA   {cfg.endpoint} (port {port}; {mode}; namespace {cfg.namespace}, Objects/Station)")
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.get(), REFRESH_S)
            while not queue.empty():        # a backlog: show only the newest state, in one write
                queue.get_nowait()
            try:
                await writer.write(shown)
            except Exception:               # e.g. a status header the hub cannot read: keep serving
                log.exception("OPC UA: could not update the station's variables")
    finally:
        await server.stop()
