"""The gateway's Modbus register map (docs/plant.md, section "modbus"): addresses, encodings, and the
register image built from the hub's state.

Addresses are 0-based protocol addresses (what goes on the wire). A PLC or HMI that numbers holding
registers 4xxxx from 1 adds 40001 (register 4 = 40005); coils 0xxxx from 1 add 1 (coil 10 = 00011).

Encodings: one register = 16 bits, bytes big-endian as Modbus sends them. 32-bit values (u32, float32)
take two registers, **low word first** (pymodbus `word_order="little"`, Schneider "word swap"; a
Siemens DINT/REAL wants the two words swapped). Text is ASCII, two characters per register, the first
character in the high byte, NUL padded (Modbus' usual string layout).

Nothing here knows pymodbus: modbus_server.py serves this image and applies the PLC's writes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence

from .hub import STATE_CODES, VERDICT_CODES, Handshake, Hub, PartResult

U32 = 0xFFFFFFFF

# Holding registers (FC3; FC4 reads the same map as input registers). R = read-only, W = the PLC writes.
HEARTBEAT = 0             # R  u16  +1 every heartbeat_s, wraps 65535 -> 0
STATE = 1                 # R  u16  hub.STATE_CODES: 0 unknown, 1 running, 2 camera lost, 3 engine error, 4 stopped
LINK = 2                  # R  u16  1 while the gateway hears the station, else 0
LAST_VERDICT = 3          # R  u16  verdict code of the newest result (0 none, 1 pass, 2 fail, 3 error)
LAST_SEQUENCE = 4         # R  u32  its sequence number (low 32 bits)
PARTS = 6                 # R  u32  results taken in (wraps at 2^32), and by verdict:
PASSED = 8                # R  u32
FAILED = 10               # R  u32
ERRORS = 12               # R  u32
FRAMES_DROPPED = 14       # R  u32  frames the station dropped this run, all reasons
LAST_LATENCY = 16         # R  f32  the newest result's latency_ms (capture -> verdict), ms
ROI_COUNT = 18            # R  u16  ROIs in the newest result (only the first MAX_ROIS are mapped)
REJECT = 19               # R  u16  1 while the reject pulse is on (mirror of coil 0)
READY = 20                # R  u16  ResultReady: 1 while a result is presented for acknowledgement
PRESENTED_VERDICT = 21    # R  u16  the presented result's verdict code (0 when none)
PRESENTED_SEQUENCE = 22   # R  u32  the presented result's sequence (0 when none)
ACK = 24                  # W  u32  ResultAck: the PLC writes the presented sequence here
ACKED = 26                # R  u32  the last acknowledged sequence
PENDING = 28              # R  u16  results waiting for acknowledgement, the presented one included
PRESENTED_ROI_FAILED = 29  # R u16  bit i set when ROI i of the presented result did not pass
ROI_SCORES = 30           # R  f32 x 8  the newest result's per-ROI scores (NaN when not scored)
ROI_THRESHOLDS = 46       # R  f32 x 8  their thresholds
ROI_VERDICTS = 62         # R  u16 x 8  their verdict codes (0 = no such ROI)
TRIGGER_PART_ID = 100     # W  text x 32 registers (64 characters): part id for the next trigger
TRIGGER_COUNT = 132       # R  u16  triggers forwarded to the station (wraps)
TRIGGER_OUTCOME = 133     # R  u16  the last trigger: 0 none yet, 1 forwarded, 2 refused (bad part id), 3 failed
PRESENTED_PART_ID = 140   # R  text x 32  the presented result's part id (first 64 characters)
LAST_PART_ID = 180        # R  text x 32  the newest result's part id
TEXT_REGS = 32
MAX_ROIS = 8
SIZE = 212
RANGES = ((0, 70), (100, 134), (140, 172), (180, 212))   # valid [start, end); the rest answers exception 02
WRITABLE = frozenset({ACK, ACK + 1, *range(TRIGGER_PART_ID, TRIGGER_PART_ID + TEXT_REGS)})

# Coils (FC1; FC2 reads the same bits as discrete inputs). Coils 0-15 exist, the unnamed ones read 0.
COIL_REJECT = 0           # R  ON for reject_pulse_ms after each failed or error part (retriggered)
COIL_READY = 1            # R  mirror of ResultReady (register 20)
COIL_HEARTBEAT = 2        # R  toggles every heartbeat_s (bit 0 of register 0)
COIL_LINK = 3             # R  mirror of register 2
COIL_TRIGGER = 10         # W  write 1: forward a trigger with the part id in registers 100-131
COILS = 16
WRITABLE_COILS = frozenset({COIL_TRIGGER})

OUTCOME_NONE, OUTCOME_FORWARDED, OUTCOME_REFUSED, OUTCOME_FAILED = 0, 1, 2, 3


def u32(value: int) -> list[int]:
    """[low word, high word] of the low 32 bits of `value`."""
    value &= U32
    return [value & 0xFFFF, value >> 16]


def f32(value: float | None) -> list[int]:
    """[low word, high word] of an IEEE 754 float32 (NaN for None)."""
    raw = struct.unpack(">I", struct.pack(">f", math.nan if value is None else value))[0]
    return u32(raw)


def read_u32(regs: Sequence[int]) -> int:
    return (regs[0] & 0xFFFF) | (regs[1] & 0xFFFF) << 16


def text(value: str, regs: int = TEXT_REGS) -> list[int]:
    """ASCII text in `regs` registers, first character in the high byte, NUL padded; characters beyond
    2*regs and non-ASCII ones ("?") do not fit."""
    raw = value.encode("ascii", "replace")[: 2 * regs].ljust(2 * regs, b"\0")
    return [raw[i] << 8 | raw[i + 1] for i in range(0, len(raw), 2)]


def printable_word(word: int) -> bool:
    """Both bytes NUL or printable ASCII (0x20-0x7E): what the part-id registers accept."""
    return all(b == 0 or 0x20 <= b <= 0x7E for b in (word >> 8, word & 0xFF))


def read_text(regs: Iterable[int]) -> str | None:
    """The text up to the first NUL; None when a byte before it is not printable ASCII."""
    raw = b"".join(bytes(((w >> 8) & 0xFF, w & 0xFF)) for w in regs)
    raw = raw.split(b"\0", 1)[0]
    if any(not 0x20 <= b <= 0x7E for b in raw):
        return None
    return raw.decode("ascii")


def put(image: list[int], address: int, words: Sequence[int]) -> None:
    image[address:address + len(words)] = words


def fill(image: list[int], hub: Hub, hs: Handshake) -> None:
    """Write everything the hub knows into the holding-register image (not the heartbeat, reject and
    trigger registers, which the server owns)."""
    c = hub.counters
    last = hub.last_result
    image[STATE] = hub_state_code(hub)
    image[LINK] = 1 if hub.connected else 0
    image[LAST_VERDICT] = last.verdict_code if last else 0
    put(image, LAST_SEQUENCE, u32(last.sequence if last else 0))
    for address, value in ((PARTS, c.parts), (PASSED, c.passed), (FAILED, c.failed), (ERRORS, c.errors),
                           (FRAMES_DROPPED, hub.frames_dropped)):
        put(image, address, u32(value))
    put(image, LAST_LATENCY, f32(last.latency_ms if last else 0.0))
    rois = last.rois if last else ()
    image[ROI_COUNT] = min(len(rois), 0xFFFF)
    for i in range(MAX_ROIS):
        roi = rois[i] if i < len(rois) else None
        put(image, ROI_SCORES + 2 * i, f32(roi.score) if roi else [0, 0])
        put(image, ROI_THRESHOLDS + 2 * i, f32(roi.threshold) if roi else [0, 0])
        image[ROI_VERDICTS + i] = VERDICT_CODES.get(roi.verdict, VERDICT_CODES["error"]) if roi else 0
    put(image, LAST_PART_ID, text(last.part_id if last else ""))
    fill_handshake(image, hs)


def fill_handshake(image: list[int], hs: Handshake) -> None:
    cur: PartResult | None = hs.current
    image[READY] = 1 if cur else 0
    image[PRESENTED_VERDICT] = cur.verdict_code if cur else 0
    put(image, PRESENTED_SEQUENCE, u32(cur.sequence if cur else 0))
    put(image, ACKED, u32(hs.acked))
    image[PENDING] = min(len(hs.pending), 0xFFFF)
    image[PRESENTED_ROI_FAILED] = sum(1 << i for i, r in enumerate(cur.rois[:16]) if r.verdict != "pass") if cur else 0
    put(image, PRESENTED_PART_ID, text(cur.part_id if cur else ""))


def hub_state_code(hub: Hub) -> int:
    return STATE_CODES.get(hub.state, 0)


def pack_bits(bits: Sequence[int]) -> list[int]:
    """Coils (bit 0 first) into 16-bit registers, coil 0 in the least significant bit."""
    out = []
    for start in range(0, len(bits), 16):
        out.append(sum(1 << i for i, b in enumerate(bits[start:start + 16]) if b))
    return out
