"""The `[gateway]` section of the inspector's TOML configuration (and INSPECTOR_GATEWAY__… variables).

One section per thing the gateway serves; an empty endpoint turns that server off. Imports nothing of
the servers' libraries: `inspector check-config` validates it on a box without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def split_host_port(value: str, what: str) -> tuple[str, int]:
    """"HOST:PORT" -> (host, port); a ValueError naming `what` otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} must be HOST:PORT (e.g. 127.0.0.1:5020), not {value!r}")
    return host, int(port)


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
    bind: str = "127.0.0.1:5020"     # "" = no Modbus server; Modbus has no security: keep it on localhost or a cell VLAN
    unit_id: int = Field(1, ge=0, le=247)
    reject_pulse_ms: int = Field(500, ge=10, le=60_000)   # how long the reject coil stays on after a failed part
    heartbeat_s: float = Field(1.0, gt=0, le=60)         # the heartbeat register counts up this often

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        if v:
            split_host_port(v, "gateway.modbus.bind")
        return v


class HttpConfig(_Section):
    bind: str = "127.0.0.1:8080"     # "" = no web page and no /metrics
    users: dict[str, str] = Field(default_factory=dict)   # user -> password hash: who may log in
    preview_fps: float = Field(2.0, gt=0, le=30)          # live view refresh the page asks for

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        if v:
            split_host_port(v, "gateway.http.bind")
        return v


class MqttConfig(_Section):
    broker: str = ""                 # "HOST:PORT" of the plant's broker; "" = no MQTT
    topic_prefix: str = "inspector"  # topics: PREFIX/STATION/result, PREFIX/STATION/status, PREFIX/STATION/gateway
    client_id: str = ""              # "" = inspector-gateway-STATION
    username: str = ""
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    qos: Literal[0, 1, 2] = 1
    keepalive_s: int = Field(30, ge=5, le=3600)

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        if v:
            split_host_port(v, "gateway.mqtt.broker")
        return v


class GatewayConfig(_Section):
    connect: str = "tcp://127.0.0.1:5556"     # the station's PUB endpoint (publish.bind)
    backfill: str = "tcp://127.0.0.1:5558"    # its backfill endpoint (publish.backfill_bind); "" = none
    trigger: str = "tcp://127.0.0.1:5557"     # its external trigger endpoint (trigger.endpoint), for Inspect()
    state_dir: Path = Path("/var/lib/inspector-gateway")   # the gateway's own small SQLite (sequence, counters, acks)
    opcua: OpcUaConfig = Field(default_factory=OpcUaConfig)
    modbus: ModbusConfig = Field(default_factory=ModbusConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
