"""The `[gateway]` section of the inspector's TOML configuration (and INSPECTOR_GATEWAY__… variables).

One section per thing the gateway serves; an empty endpoint turns that server off. Imports nothing of
the servers' libraries: `inspector check-config` validates it on a box without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from inspector.state.labels import GOOD, LABEL_RE

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def split_host_port(value: str, what: str) -> tuple[str, int]:
    """"HOST:PORT" -> (host, port); a ValueError naming `what` otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must be HOST:PORT (e.g. 127.0.0.1:5020), not {value!r}")
    return host, int(port)


def check_mqtt_topic(value: str, what: str, *, one_level: bool = False) -> str:
    """An MQTT topic name (or, with `one_level`, one level of it) we may publish to: not empty, no
    wildcard `+`/`#`, no NUL, no leading `$` (broker topics), at most 65535 UTF-8 bytes; a ValueError
    naming `what` otherwise."""
    bad = [c for c in "+#\0" + ("/" if one_level else "") if c in value]
    why = ("is empty" if not value else f"contains {bad[0]!r}" if bad else
           "starts with $" if value.startswith("$") else "is too long" if len(value.encode()) > 65535 else "")
    if why:
        raise ValueError(f"{what} {value!r} is not usable in an MQTT topic: it {why}")
    return value


def _host_port_or_empty(value: str) -> str:
    if value:
        split_host_port(value, "the address")
    return value


HostPort = Annotated[str, AfterValidator(_host_port_or_empty)]   # "HOST:PORT", or "" for off


class OpcUaConfig(_Section):
    endpoint: str = "opc.tcp://127.0.0.1:4840/inspector"   # "" = no OPC UA server
    namespace: str = "urn:bigan-inspect:station"
    # "auto": anonymous and unencrypted only when the endpoint is on localhost, else Basic256Sha256
    # Sign&Encrypt with a certificate and user/password; "none" forces the former (tests, a closed cell),
    # "sign_encrypt" the latter.
    security: Literal["auto", "none", "sign_encrypt"] = "auto"
    certificate: Path | None = None      # the server's certificate (DER or PEM), `inspector gateway-cert` makes one
    private_key: Path | None = None
    trusted_clients: Path | None = None  # a folder of client certificates to trust (None = any client certificate)
    users: dict[str, str] = Field(default_factory=dict)   # user -> password hash (`inspector gateway-passwd`)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if v and not v.startswith("opc.tcp://"):
            raise ValueError(f"an OPC UA endpoint starts with opc.tcp://, not {v!r}")
        return v


class ModbusConfig(_Section):
    bind: HostPort = "127.0.0.1:5020"     # "" = no Modbus server; Modbus has no security: keep it on localhost or a cell VLAN
    unit_id: int = Field(1, ge=0, le=247)
    reject_pulse_ms: int = Field(500, ge=10, le=60_000)   # how long the reject coil stays on after a failed part
    heartbeat_s: float = Field(1.0, gt=0, le=60)         # the heartbeat register counts up this often


class HttpConfig(_Section):
    bind: HostPort = "127.0.0.1:8080"     # "" = no web page and no /metrics
    users: dict[str, str] = Field(default_factory=dict)   # user -> password hash: who may log in
    preview_fps: float = Field(2.0, gt=0, le=30)          # live view refresh the page asks for
    # the page's label buttons (logged-in users; the station's journal, [state]): "good" and one per defect name
    label_defects: list[str] = Field(default_factory=lambda: ["defect"], max_length=20)

    @field_validator("label_defects")
    @classmethod
    def _defect_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not LABEL_RE.match(name) or name.lower() == GOOD:
                raise ValueError(f"gateway.http.label_defects: {name!r} is not a defect name (letters, digits, "
                                 "_ and -, at most 32 characters; not `good`)")
        if len(set(v)) != len(v):
            raise ValueError("gateway.http.label_defects: a name appears twice")
        return v


class MqttConfig(_Section):
    broker: HostPort = ""                 # "HOST:PORT" of the plant's broker; "" = no MQTT
    topic_prefix: str = "inspector"  # topics: PREFIX/STATION/result, PREFIX/STATION/status, PREFIX/STATION/gateway
    client_id: str = ""              # "" = inspector-gateway-STATION
    username: str = ""
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    qos: Literal[0, 1, 2] = 1
    keepalive_s: int = Field(30, ge=5, le=3600)
    queue_limit: int = Field(50_000, ge=10, le=10_000_000)   # results held while the broker is away (oldest dropped)

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, v: str) -> str:
        return check_mqtt_topic(v, "gateway.mqtt.topic_prefix")


class GatewayConfig(_Section):
    connect: str = "tcp://127.0.0.1:5556"     # the station's PUB endpoint (publish.bind)
    backfill: str = "tcp://127.0.0.1:5558"    # its backfill endpoint (publish.backfill_bind); "" = none
    trigger: str = "tcp://127.0.0.1:5557"     # its external trigger endpoint (trigger.endpoint), for Inspect()
    state_dir: Path = Path("/var/lib/inspector-gateway")   # the gateway's own small SQLite (sequence, counters, acks)
    history_rows: int = Field(1_000_000, ge=1)   # result headers kept in state_dir for the web history (newest)
    # NORMAL: what the gateway took in survives a crash of the gateway; a power cut may lose its last
    # transactions, which it then takes in again from the station's journal (the station's own journal is
    # FULL: nothing is lost, counters stay exact, a PLC may be shown its last results once more). FULL adds
    # an fsync per batch: p99 12 ms from the station to the servers against 5 ms on this project's disk.
    synchronous: Literal["FULL", "NORMAL"] = "NORMAL"
    # CURVE, when the station's security.mode is stonehouse/ironhouse: this gateway's key pair
    # (`inspector keygen DIR --name gateway`; ironhouse: its .key in the station's security.allow_dir) and
    # the station's public key (its security.key_dir/station.key, copied here). Both or neither.
    client_key: Path | None = None      # the gateway's .key_secret
    server_key: Path | None = None      # the station's .key
    opcua: OpcUaConfig = Field(default_factory=OpcUaConfig)
    modbus: ModbusConfig = Field(default_factory=ModbusConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)

    @model_validator(mode="after")
    def _curve_pair(self) -> GatewayConfig:
        if (self.client_key is None) != (self.server_key is None):
            raise ValueError("client_key (the gateway's .key_secret) and server_key (the station's .key) go "
                             "together: set both for CURVE, or neither")
        return self
