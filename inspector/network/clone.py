"""The client side of the Clone pattern, shared by `inspector listen` and the gateway's feed: which
sequence numbers were missed, which are duplicates, and backfilled images back in their header's order.

Sequence numbers continue across daemon restarts (the journal), so a new run_id is not a reset: a client
keeps checking `last + 1` (docs/protocol.md, "Sequence numbers, gaps, restarts and backfill").
"""

from __future__ import annotations

from typing import Any


class GapDetector:
    """Tracks the result sequence: a jump forward is a gap of lost results. Sequence numbers continue
    across daemon restarts (the journal), so a new run_id is not a reset: keep checking last + 1."""

    def __init__(self, last: int | None = None) -> None:
        self.last = last  # the newest sequence seen (None before the first)
        self.gaps = 0
        self.lost = 0

    @property
    def expected(self) -> int | None:
        return None if self.last is None else self.last + 1

    def missing(self, seq: int) -> range:
        """The sequence numbers skipped just before `seq` (empty if none)."""
        return range(self.last + 1, seq) if self.last is not None else range(0)

    def see(self, header: dict[str, Any]) -> int:
        """Record a result; the number of results lost just before it (0 if none)."""
        seq = int(header["sequence"])
        lost = len(self.missing(seq))
        if lost:
            self.gaps += 1
            self.lost += lost
        self.last = seq if self.last is None else max(self.last, seq)
        return lost

    def duplicate(self, header: dict[str, Any]) -> bool:
        """Already seen (a live message that a backfill delivered first)."""
        return self.last is not None and int(header["sequence"]) <= self.last


def images_in_order(header: dict[str, Any], by_key: dict[str, bytes]) -> list[bytes]:
    """Backfilled images {"roi/kind": bytes} in the order of the header's `images`; [] unless all of them
    are still stored (send and store kinds differ, or the station's quota deleted some)."""
    out = []
    for desc in header.get("images") or []:
        data = by_key.get(f"{desc['roi']}/{desc['kind']}")
        if data is None:
            return []
        out.append(data)
    return out


def image_pairs(header: dict[str, Any], by_key: dict[str, bytes]) -> list[tuple[dict[str, Any], bytes]]:
    """Backfilled images as (descriptor, bytes): the header's descriptor where it lists that ROI and kind,
    else one made from the key (the station stores kinds it does not send); header order first."""
    described = {f"{d['roi']}/{d['kind']}": d for d in header.get("images") or []}
    order = [k for k in described if k in by_key] + [k for k in by_key if k not in described]
    out = []
    for key in order:
        desc = described.get(key)
        if desc is None:
            roi, _, kind = key.rpartition("/")
            desc = {"roi": roi, "kind": kind, "format": _sniff(by_key[key])}
        out.append((desc, by_key[key]))
    return out


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    return "bin"
