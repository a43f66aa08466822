"""The web page's label action (inspector/gateway/web/labels.py): a logged-in operator's "good" / "defect:
NAME" on a result is written into the station's journal by inspector/state/labels.py, with the user as
`labelled_by`. The journal is a real one, written by `inspector replay --state DIR` (a real process, the
mean-pixel ONNX model, a small video); the API through Starlette's TestClient, the refusal without login
against a real uvicorn server with an HTTP client (httpx2), and the buttons in a real headless Chromium.
GATEWAY_WEB_SCREENSHOTS=DIR keeps the browser test's screenshot there (docs/images/gateway-labels.png)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from test_gateway_web import CHROMIUM, PASSWORD, Served, _screenshot, open_page, wait_js
from test_inspector_support import REPO, inspector_cmd, make_mean_model, subprocess_env, write_conveyor_video

from inspector.config import load_config
from inspector.gateway.config import HttpConfig
from inspector.gateway.hub import Hub, PartResult
from inspector.gateway.passwords import hash_password
from inspector.gateway.run import station_journal
from inspector.gateway.web import make_app

USERS = {"operator": hash_password(PASSWORD)}
DEFECTS = ["scratch", "dent"]


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A station's state folder: a replay of 6 parts journaled (sequences 1..N, a verdict per part)."""
    base = tmp_path_factory.mktemp("station")
    video = write_conveyor_video(base / "line.avi", n_parts=6)
    model = make_mean_model(base / "model.onnx", size=32)
    done = subprocess.run(inspector_cmd("replay", str(video.video), "--model", str(model), "--config",
                                        str(video.video.with_suffix(".toml")), "--state", str(base / "state")),
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return base / "state"


@pytest.fixture
def journal(station: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(station, copy)
    return copy / "journal.db"


def rows(journal: Path, table: str = "labels") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(journal)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
            return []
        order = "sequence" if table == "labels" else "id"
        return conn.execute(f"SELECT sequence, label, labelled_by, note FROM {table} ORDER BY {order}").fetchall()
    finally:
        conn.close()


def headers(journal: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(journal)
    try:
        return [json.loads(h) for (h,) in conn.execute("SELECT header_json FROM verdicts ORDER BY seq")]
    finally:
        conn.close()


def login(c: TestClient) -> str:
    csrf = c.get("/api/session").json()["csrf"]
    ok = c.post("/login", data={"user": "operator", "password": PASSWORD, "csrf": csrf},
                headers={"accept": "application/json"})
    assert ok.status_code == 200
    return str(ok.json()["csrf"])


def test_a_logged_in_user_labels_parts_into_the_station_journal(journal: Path) -> None:
    n = len(headers(journal))
    assert n >= 6
    cfg = HttpConfig(users=USERS, label_defects=DEFECTS)
    with TestClient(make_app(Hub(), cfg, "line-a", journal=journal)) as c:
        assert c.get("/api/label").json() == {"enabled": True, "reason": None, "defects": DEFECTS}
        anonymous = c.get("/api/session").json()["csrf"]
        refused = c.post("/api/label", data={"sequence": "1", "label": "good"}, headers={"x-csrf-token": anonymous})
        assert refused.status_code == 401 and rows(journal) == []          # not logged in: nothing written
        csrf = login(c)
        assert c.post("/api/label", data={"sequence": "1", "label": "good"}).status_code == 403      # no token
        assert c.post("/api/label", data={"sequence": "1", "label": "good"},
                      headers={"x-csrf-token": csrf, "origin": "http://evil.example"}).status_code == 403
        assert rows(journal) == []

        ok = c.post("/api/label", data={"sequence": "1, 2 2", "label": "good"}, headers={"x-csrf-token": csrf})
        assert ok.status_code == 200 and ok.json() == {"labelled": 2, "sequences": [1, 2], "label": "good",
                                                       "by": "operator"}
        ok = c.post("/api/label", data={"sequence": f"{n}", "label": "scratch", "note": "under the light"},
                    headers={"x-csrf-token": csrf})
        assert ok.status_code == 200
        assert c.post("/api/label", data={"sequence": "1", "label": "dent"}, headers={"x-csrf-token": csrf}).json()[
            "label"] == "dent"                                               # a later label replaces the row
        assert rows(journal) == [(1, "dent", "operator", None), (2, "good", "operator", None),
                                 (n, "scratch", "operator", "under the light")]
        assert [r[:2] for r in rows(journal, "label_history")] == [(1, "good"), (2, "good"), (n, "scratch"),
                                                                    (1, "dent")]

        before = rows(journal, "label_history")
        for form, says in [({"sequence": "1", "label": "Bad Name"}, "neither `good` nor a defect name"),
                           ({"sequence": "1", "label": "Good"}, "lower case"),
                           ({"sequence": f"1 {n + 1000}", "label": "good"}, f"{n + 1000} not in the journal"),
                           ({"sequence": "0", "label": "good"}, "not a sequence number"),
                           ({"sequence": "x", "label": "good"}, "not a sequence number"),
                           ({"sequence": "", "label": "good"}, "no sequence given"),
                           ({"sequence": " ".join(["1"] * 201), "label": "good"}, "at most 200")]:
            bad = c.post("/api/label", data=form, headers={"x-csrf-token": csrf})
            assert bad.status_code == 400, (form, bad.text)
            error = bad.json()["error"]
            assert says in error and "\n" not in error and "Traceback" not in error, (form, error)
        assert rows(journal, "label_history") == before                       # nothing written by any of them


def test_without_a_journal_the_action_is_off_and_says_why(tmp_path: Path) -> None:
    cfg = HttpConfig(users=USERS)
    for journal, says in [(None, "keeps no journal"), (tmp_path / "nowhere" / "journal.db", "no station journal at")]:
        with TestClient(make_app(Hub(), cfg, "line-a", journal=journal)) as c:
            info = c.get("/api/label").json()
            assert info["enabled"] is False and says in info["reason"] and info["defects"] == ["defect"]
            csrf = login(c)
            off = c.post("/api/label", data={"sequence": "1", "label": "good"}, headers={"x-csrf-token": csrf})
            assert off.status_code == 503 and says in off.json()["error"]
    assert not (tmp_path / "nowhere").exists()                                 # no journal is ever created


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write a read-only file")
def test_a_journal_the_gateway_may_not_write_turns_the_action_off(journal: Path) -> None:
    journal.parent.chmod(0o555)
    journal.chmod(0o444)
    try:
        with TestClient(make_app(Hub(), HttpConfig(users=USERS), "line-a", journal=journal)) as c:
            info = c.get("/api/label").json()
            assert info["enabled"] is False and "read-only for the gateway" in info["reason"]
    finally:
        journal.parent.chmod(0o755)
        journal.chmod(0o644)


def test_the_gateway_takes_the_journal_from_the_stations_configuration(tmp_path: Path) -> None:
    toml = tmp_path / "station.toml"
    toml.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n\n[gateway.http]\nlabel_defects = ["dent"]\n')
    cfg = load_config(toml)
    assert station_journal(cfg) == tmp_path / "state" / "journal.db" and cfg.gateway.http.label_defects == ["dent"]
    toml.write_text(toml.read_text().replace("[state]\n", "[state]\njournal = false\n"))
    assert station_journal(load_config(toml)) is None


def test_the_defect_names_are_checked_in_the_configuration() -> None:
    for bad in (["good"], ["a b"], ["x", "x"], ["y" * 33]):
        with pytest.raises(ValueError, match="label_defects"):
            HttpConfig(label_defects=bad)


# --- a real server -----------------------------------------------------------------------------------
@pytest.fixture
def served(journal: Path) -> Iterator[Served]:
    hub = Hub()
    for h in headers(journal):  # the station's own results, as the gateway received them
        hub.on_result(PartResult.from_message(h, []))
    cfg = HttpConfig.model_construct(bind="127.0.0.1:0", users=USERS, preview_fps=2.0, label_defects=DEFECTS)
    server = Served(hub, cfg, journal)
    try:
        yield server
    finally:
        server.stop()


def test_a_real_server_refuses_a_label_without_login(served: Served, journal: Path) -> None:
    httpx = pytest.importorskip("httpx2")
    with httpx.Client(base_url=served.url, timeout=10) as c:
        assert c.post("/api/label", data={"sequence": "1", "label": "good"}).status_code == 401   # no session
        csrf = c.get("/api/session").json()["csrf"]
        anonymous = c.post("/api/label", data={"sequence": "1", "label": "good"}, headers={"x-csrf-token": csrf})
        assert anonymous.status_code == 401 and anonymous.json() == {"error": "log in first"}
        assert rows(journal) == []
        logged = c.post("/login", data={"user": "operator", "password": PASSWORD, "csrf": csrf},
                        headers={"accept": "application/json"})
        assert logged.status_code == 200
        ok = c.post("/api/label", data={"sequence": "3", "label": "dent"},
                    headers={"x-csrf-token": logged.json()["csrf"]})
        assert ok.status_code == 200, ok.text
    assert rows(journal) == [(3, "dent", "operator", None)]


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists(), reason="no /usr/bin/chromium")
def test_the_page_labels_a_result_with_its_buttons(served: Served, journal: Path, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    last = headers(journal)[-1]["sequence"]
    off = Served(Hub(), HttpConfig.model_construct(bind="127.0.0.1:0", users=USERS, preview_fps=2.0,
                                                   label_defects=DEFECTS), None)  # a gateway without a journal
    try:
        with playwright.sync_playwright() as pw:
            browser, page, errors = open_page(pw)
            page.goto(served.url)
            wait_js(page, f"document.querySelector('#results tr[data-seq=\"{last}\"]') !== null", timeout=10_000)
            row = f'#results tr[data-seq="{last}"]'
            assert page.locator(f"{row} .label-col button").count() == 1 + len(DEFECTS)
            assert not page.is_visible(f"{row} .label-col button")           # not logged in: no buttons
            page.fill("#login-user", "operator")
            page.fill("#login-password", PASSWORD)
            page.click("#login-form button[type=submit]")
            wait_js(page, "document.body.classList.contains('can-label')", timeout=5_000)
            assert page.is_visible(f"{row} button[data-label=good]")
            assert page.text_content(f"{row} button[data-label=scratch]") == "defect: scratch"
            page.click(f"{row} button[data-label=scratch]")
            wait_js(page, f"document.querySelector('{row} .labelled') !== null", timeout=5_000)
            assert page.text_content(f"{row} .labelled") == "✓ scratch"
            other = f'#results tr[data-seq="{last - 1}"]'
            page.click(f"{other} button[data-label=good]")
            wait_js(page, f"document.querySelector('{other} .labelled') !== null", timeout=5_000)
            shots = Path(os.environ.get("GATEWAY_WEB_SCREENSHOTS") or tmp_path)
            shots.mkdir(parents=True, exist_ok=True)
            _screenshot(page, shots / "gateway-labels.png")
            assert rows(journal) == [(last - 1, "good", "operator", None), (last, "scratch", "operator", None)]

            page.goto(off.url)                                                 # no journal: no buttons at all
            wait_js(page, "document.getElementById('station-id').textContent === 'line-a'", timeout=10_000)
            page.fill("#login-user", "operator")
            page.fill("#login-password", PASSWORD)
            page.click("#login-form button[type=submit]")
            wait_js(page, "!document.getElementById('logged-in').hidden", timeout=5_000)
            assert not page.evaluate("document.body.classList.contains('can-label')")
            assert not errors, errors
            browser.close()
    finally:
        off.stop()
