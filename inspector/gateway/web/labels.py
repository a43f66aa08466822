"""The page's label action: a logged-in operator's judgement of a result ("good" or a defect name) written
into the STATION's journal by inspector/state/labels.py, the function `inspector label` uses (one
transaction; a sequence not in the journal writes nothing), with the user's name as `labelled_by`.

    GET  /api/label   {"enabled", "reason" (why not, or null), "defects" ([gateway.http] label_defects)}
    POST /api/label   form: sequence ("12" or "12 13 14", at most MAX_SEQUENCES), label, note (optional);
                      a logged-in session and its CSRF token in X-CSRF-Token (auth.py), like every POST;
                      200 {"labelled", "sequences", "label", "by"}; 401/403 not logged in / no token;
                      503 no journal (labels off); 400 a bad sequence or label, or one not in the journal.

The journal is the station's `[state]` journal_file from the configuration the gateway reads
(`inspector gateway --config`); `[state] journal = false`, no journal file on this box (a gateway on
another machine than its station), or one the gateway may not write turns the action off: GET says why,
the page shows no buttons.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from inspector.errors import InspectorError
from inspector.gateway.web.auth import Sessions, small_form
from inspector.state.labels import LabelOptions, parse_sequences, write_labels

MAX_SEQUENCES = 200
NO_STORE = {"cache-control": "no-store"}


class Labeller:
    def __init__(self, sessions: Sessions, journal: Path | None, defects: list[str]) -> None:
        self.sessions = sessions
        self.journal = journal  # None: the station's configuration has no journal
        self.defects = list(defects)
        self._writing = asyncio.Lock()  # one label transaction at a time from this gateway

    def unavailable(self) -> str | None:
        """Why labels cannot be written from here, or None."""
        if self.journal is None:
            return "labels are off: the station keeps no journal ([state] journal = false)"
        if not self.journal.is_file():
            return (f"labels are off: no station journal at {self.journal} on this machine (run the gateway "
                    "beside its station, with its configuration: inspector gateway --config FILE)")
        if not (os.access(self.journal, os.W_OK) and os.access(self.journal.parent, os.W_OK)):
            return (f"labels are off: the station journal {self.journal} is read-only for the gateway (run it as "
                    f"the station's user; its systemd unit: ReadWritePaths={self.journal.parent})")
        return None

    async def info(self, request: Request) -> Response:
        reason = self.unavailable()
        return JSONResponse({"enabled": reason is None, "reason": reason, "defects": self.defects},
                            headers=NO_STORE)

    async def label(self, request: Request) -> Response:
        session = self.sessions.require_user(request)  # 401 / 403 before anything is read or written
        form = await small_form(request)
        reason, journal = self.unavailable(), self.journal
        if reason is not None or journal is None:
            return JSONResponse({"error": reason}, status_code=503, headers=NO_STORE)
        sequences = tuple(s for s in re.split(r"[\s,]+", form.get("sequence", "")) if s)
        if not sequences:
            return _bad("label: no sequence given (form field `sequence`: one number, or several separated by "
                        "spaces or commas)")
        if len(sequences) > MAX_SEQUENCES:
            return _bad(f"label: at most {MAX_SEQUENCES} sequences at a time, got {len(sequences)}")
        opts = LabelOptions(journal, sequences, form.get("label", ""), by=session.user, note=form.get("note") or None)
        try:
            async with self._writing:
                n = await asyncio.to_thread(write_labels, opts)
        except InspectorError as e:
            return _bad(str(e))
        return JSONResponse({"labelled": n, "sequences": parse_sequences(sequences), "label": opts.label,
                             "by": session.user}, headers=NO_STORE)


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400, headers=NO_STORE)
