"""The gateway's operator web page, JSON API, login and /metrics (inspector/gateway/web/).

The API through Starlette's TestClient (bad parameters are 400s with a JSON error, never 500s), the login
and CSRF chain, /metrics parsed by prometheus_client's own parser, the event stream and shutdown of a real
uvicorn server (serve_http), and the page itself in a real headless Chromium against a gateway process fed
100 results/s (tests/gateway_web_feeder.py). That test saves its screenshots in its tmp folder, or in
the folder named by GATEWAY_WEB_SCREENSHOTS (`GATEWAY_WEB_SCREENSHOTS=docs/images` refreshes the ones
docs/plant.md shows: docs/images/gateway-*.png).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_web_feeder import MemoryHistory, drift, preview, status, take, verdict_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from inspector.gateway.config import HttpConfig
from inspector.gateway.hub import Hub
from inspector.gateway.passwords import hash_password
from inspector.gateway.web import make_app, serve_http

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse"


def _hub(n: int = 30) -> tuple[Hub, MemoryHistory]:
    hub, history = Hub(), MemoryHistory()
    hub.history = history
    hub.on_status(status(n))
    hub.on_preview(*preview(3))
    for seq in range(1, n + 1):
        take(hub, history, seq, t=1_800_000_000.0 + seq)
    return hub, history


@pytest.fixture()
def client() -> Iterator[tuple[TestClient, Hub, MemoryHistory]]:
    hub, history = _hub()
    with TestClient(make_app(hub, HttpConfig(), "line-a")) as c:
        yield c, hub, history


def test_state_results_result_image_and_preview(client: tuple[TestClient, Hub, MemoryHistory]) -> None:
    c, hub, history = client
    s = c.get("/api/state").json()
    assert s["station_id"] == "line-a" and s["counters"] == {"parts": 30, "passed": 25, "failed": 4, "errors": 1,
                                                             "reject_rate": round(5 / 30, 6)}
    assert s["status"]["state"] == "running" and s["status"]["camera_up"] and s["status"]["engine"]["state"] == "ok"
    assert s["status"]["latency"] == {"p50_ms": 14.5, "p99_ms": 21.0, "source": "station"}
    assert s["status"]["journal"]["state"] == "ok" and s["status"]["image_store"]["quota_bytes"] == 2 << 30
    assert s["last_result"]["sequence"] == 30 and s["preview"]["frame"] == 3 and s["connected"]
    rows = c.get("/api/results?limit=5").json()["results"]
    assert [r["sequence"] for r in rows] == [30, 29, 28, 27, 26]
    assert rows[2]["verdict"] == "fail" and rows[2]["rois"][0] == {"name": "left", "score": 0.4, "threshold": 0.25,
                                                                  "verdict": "fail"}
    assert len(rows[2]["images"]) == 6 and len(rows[0]["images"]) == 6 and rows[1]["images"] == []  # 30: error
    r = c.get("/api/result/28").json()
    assert r["part_id"] == "LOT7-000028" and {(i["roi"], i["kind"]) for i in r["images"]} >= {("left", "heatmap")}
    img = c.get("/api/image/28/left/heatmap")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png" and img.content[:4] == b"\x89PNG"
    p = c.get("/api/preview.jpg")
    assert p.headers["content-type"] == "image/jpeg" and p.content[:2] == b"\xff\xd8"
    assert p.headers["x-preview-frame"] == "3" and json.loads(p.headers["x-preview-rois"])[0]["name"] == "left"
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert c.get(asset).status_code == 200
    assert "http" not in page.text.replace('"http', "")  # nothing from outside the box


def test_history_search_paging_and_images_of_a_part_no_longer_in_memory(
        client: tuple[TestClient, Hub, MemoryHistory]) -> None:
    c, hub, history = client
    body = c.get("/api/history?verdict=fail&limit=2").json()
    assert body["source"] == "history" and [r["sequence"] for r in body["results"]] == [28, 21]
    nxt = c.get(f"/api/history?verdict=fail&limit=2&before={body['next_before']}").json()
    assert [r["sequence"] for r in nxt["results"]] == [14, 7] and nxt["next_before"] == 7
    t = 1_800_000_000.0
    window = c.get(f"/api/history?since={t + 9.5}&until={t + 12.5}").json()["results"]
    assert [r["sequence"] for r in window] == [12, 11, 10]
    iso = c.get("/api/history?since=2027-01-15T08:00:12%2B00:00&part_id=00002").json()["results"]
    assert all("00002" in r["part_id"] for r in iso) and iso
    hub.recent.clear()                                  # gone from memory: the station's image store answers
    assert c.get("/api/image/7/right/input").status_code == 200 and history.image_requests >= 1
    assert c.get("/api/result/7").json()["header"]["sequence"] == 7
    assert c.get("/api/image/8/left/input").status_code == 404          # a passed part: no images kept
    assert c.get("/api/result/999").status_code == 404
    hub.preview = None
    assert c.get("/api/preview.jpg").status_code == 404


BAD = [
    "/api/history?verdict=maybe", "/api/history?since=yesterday", "/api/history?since=nan", "/api/history?until=inf",
    "/api/history?since=1e300", "/api/history?since=-5", "/api/history?since=20&until=10", "/api/history?limit=0",
    "/api/history?limit=-1", "/api/history?limit=100000", "/api/history?limit=1.5", "/api/history?limit=%00",
    "/api/history?before=0", "/api/history?before=99999999999999999999999", "/api/history?part_id=" + "x" * 200,
    "/api/history?part_id=a%00b", "/api/results?limit=abc", "/api/results?limit=0", "/api/result/abc",
    "/api/result/0", "/api/result/-3", "/api/result/1e3", "/api/result/99999999999999999999999",
    "/api/image/abc/left/input", "/api/image/7/a%00b/input", "/api/image/7/..%20/input", "/api/image/7/left/passwd",
    "/api/image/7/" + "r" * 65 + "/input", "/api/events?after=x", "/api/events?after=-1",
]


@pytest.mark.parametrize("url", BAD)
def test_bad_parameters_get_a_400_with_a_json_error(client: tuple[TestClient, Hub, MemoryHistory], url: str) -> None:
    r = client[0].get(url)
    assert r.status_code == 400, (url, r.status_code, r.text)
    assert r.headers["content-type"] == "application/json" and r.json()["error"]


def test_unknown_routes_and_methods_are_json_errors(client: tuple[TestClient, Hub, MemoryHistory]) -> None:
    c = client[0]
    assert c.get("/api/nothing").status_code == 404 and c.get("/api/nothing").json()["error"]
    assert c.post("/api/state").status_code == 405
    assert c.get("/static/../app.py").status_code == 404
    assert c.get("/api/image/7/left/input/extra").status_code == 404
    assert c.get("/api/image/7/..%2F..%2Fetc/input").status_code == 404


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(["verdict", "since", "until", "part_id", "limit", "before", "x"]),
                              st.text(max_size=30), max_size=5))
def test_any_history_query_is_answered_200_or_400(client: tuple[TestClient, Hub, MemoryHistory],
                                                 params: dict[str, str]) -> None:
    r = client[0].get("/api/history", params=params)
    assert r.status_code in (200, 400), (params, r.status_code, r.text)
    assert "results" in r.json() if r.status_code == 200 else r.json()["error"]


def test_login_csrf_chain() -> None:
    hub, _ = _hub(3)
    users = {"operator": hash_password(PASSWORD)}
    with TestClient(make_app(hub, HttpConfig(users=users), "line-a")) as c:
        assert c.post("/api/ping-authenticated").status_code == 401                     # no session at all
        s = c.get("/api/session")
        cookie = s.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and s.json()["login_enabled"]
        csrf = s.json()["csrf"]
        assert c.post("/api/ping-authenticated", headers={"x-csrf-token": csrf}).status_code == 401  # anonymous
        assert c.post("/login", data={"user": "operator", "password": PASSWORD}).status_code == 403  # no CSRF
        wrong = c.post("/login", data={"user": "operator", "password": "nope", "csrf": csrf},
                       headers={"accept": "application/json"})
        assert wrong.status_code == 401 and wrong.json()["error"]
        unknown = c.post("/login", data={"user": "root", "password": PASSWORD, "csrf": csrf},
                         headers={"accept": "application/json"})
        assert unknown.status_code == 401
        ok = c.post("/login", data={"user": "operator", "password": PASSWORD, "csrf": csrf},
                    headers={"accept": "application/json"})
        assert ok.status_code == 200 and ok.json()["user"] == "operator"
        new_csrf = ok.json()["csrf"]
        assert new_csrf != csrf and c.get("/api/session").json() == {"user": "operator", "csrf": new_csrf,
                                                                   "login_enabled": True}
        assert c.post("/api/ping-authenticated").status_code == 403                      # logged in, no token
        assert c.post("/api/ping-authenticated", headers={"x-csrf-token": csrf}).status_code == 403   # old one
        assert c.post("/api/ping-authenticated", headers={"x-csrf-token": new_csrf,
                                                          "origin": "http://evil.example"}).status_code == 403
        good = c.post("/api/ping-authenticated", headers={"x-csrf-token": new_csrf})
        assert good.status_code == 200 and good.json()["user"] == "operator"
        session = c.cookies.get("inspector_session")
        body, sig = session.split(".")
        c.cookies.clear()
        c.cookies.set("inspector_session", body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig)
        assert c.post("/api/ping-authenticated", headers={"x-csrf-token": new_csrf}).status_code == 401  # tampered
        c.cookies.clear()
        c.cookies.set("inspector_session", session)
        assert c.post("/api/ping-authenticated", headers={"x-csrf-token": new_csrf}).status_code == 200
        assert c.post("/logout", data={"csrf": new_csrf}, headers={"accept": "application/json"}).status_code == 200
        assert c.post("/api/ping-authenticated", headers={"x-csrf-token": new_csrf}).status_code in (401, 403)
        form = c.post("/login", data={"user": "operator", "password": "nope",
                                      "csrf": c.get("/api/session").json()["csrf"]}, follow_redirects=False)
        assert form.status_code == 303 and form.headers["location"] == "/?login=failed"   # the plain HTML form
        assert c.post("/login", content=b"x" * 10_000,
                      headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413


def test_metrics_are_exact_and_parse(client: tuple[TestClient, Hub, MemoryHistory]) -> None:
    c, hub, history = client
    for seq in range(31, 41):
        c.portal.call(take, hub, history, seq)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = c.get("/metrics").text
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        if fams["inspector_latency_seconds"].samples and \
                {s.name: s.value for s in fams["inspector_latency_seconds"].samples}["inspector_latency_seconds_count"] == 10:
            break
        time.sleep(0.05)
    parts = fams["inspector_parts"]
    assert parts.type == "counter"
    assert {s.labels["verdict"]: s.value for s in parts.samples if s.name == "inspector_parts_total"} == \
        {"pass": hub.counters.passed, "fail": hub.counters.failed, "error": hub.counters.errors}
    assert all(set(s.labels) == {"verdict"} for s in parts.samples if s.name == "inspector_parts_total")
    assert sum(s.value for s in parts.samples if s.name == "inspector_parts_total") == 40
    lat = {s.name: s for s in fams["inspector_latency_seconds"].samples if not s.labels.get("le")}
    assert lat["inspector_latency_seconds_count"].value == 10         # observed as results arrive (after start)
    assert fams["inspector_latency_seconds"].type == "histogram"
    assert [s.value for s in fams["inspector_frames"].samples if s.name == "inspector_frames_total"] == [90]
    dropped = {s.labels["reason"]: s.value for s in fams["inspector_frames_dropped"].samples
               if s.name == "inspector_frames_dropped_total"}
    assert dropped == {"queue_full": 2, "bad_trigger": 1}
    gauges = {f: fams[f].samples[0].value for f in ("inspector_camera_up", "inspector_engine_up",
                                                    "inspector_gateway_connected", "inspector_last_sequence")}
    assert gauges == {"inspector_camera_up": 1, "inspector_engine_up": 1, "inspector_gateway_connected": 1,
                      "inspector_last_sequence": 40}
    info = fams["inspector_model_info"].samples[0]   # an info metric (a gauge of 1 in the 0.0.4 text format)
    assert info.name == "inspector_model_info" and info.labels["model_id"] == "ours-proj-1ec412cd591b"
    depth = {s.labels["queue"]: s.value for s in fams["inspector_queue_depth"].samples}
    assert "gateway_web_events" in depth and depth["station_journal_pending"] == 0
    state = {s.labels["inspector_station_state"]: s.value for s in fams["inspector_station_state"].samples}
    assert state["running"] == 1 and state["camera_lost"] == 0
    quantiles = {s.labels["quantile"]: s.value for s in fams["inspector_station_latency_seconds"].samples}
    assert quantiles == {"0.5": 0.0145, "0.99": 0.021}
    hub.on_status(status(40, camera="reconnecting"))
    fams = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
    assert fams["inspector_camera_up"].samples[0].value == 0
    assert {s.labels["inspector_station_state"]: s.value for s in fams["inspector_station_state"].samples}[
        "camera_lost"] == 1



def test_drift_object_reaches_metrics_and_the_page_state(client: tuple[TestClient, Hub, MemoryHistory]) -> None:
    c, hub, _ = client

    def drift_metrics() -> dict[str, Any]:
        fams = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
        return {"state": {s.labels["inspector_drift_state"]: s.value for s in fams["inspector_drift_state"].samples},
                "warning": fams["inspector_drift_warning"].samples[0].value,
                "shift": fams["inspector_drift_shift"].samples[0].value if "inspector_drift_shift" in fams else None,
                "rates": {s.labels["kind"]: s.value for s in fams["inspector_drift_fail_rate"].samples}}

    m = drift_metrics()   # a station that sends no drift object: unknown, no numbers
    assert m["state"]["unknown"] == 1 and m["warning"] == 0 and m["shift"] is None and m["rates"] == {}
    assert c.get("/api/state").json()["status"]["drift"] is None
    c.portal.call(hub.on_status, status(30, drift=drift("warning")))
    m = drift_metrics()
    assert m["state"] == {"unknown": 0, "ok": 0, "warning": 1, "off": 0} and m["warning"] == 1
    assert m["shift"] == 2.4 and m["rates"] == {"recent": 0.19, "expected": 0.025}
    page = c.get("/api/state").json()["status"]["drift"]
    assert page["state"] == "warning" and "moved up by 2.4" in page["reason"] and page["median_shift"] == 2.4
    c.portal.call(hub.on_status, status(30, drift=drift("ok")))
    m = drift_metrics()
    assert m["state"]["ok"] == 1 and m["warning"] == 0 and m["shift"] == 0.2


# --- a real server: serve_http on its own loop in a thread ----------------------------------------
class Served:
    """serve_http on its own event loop in a thread (as the gateway runs it), until stop(); with `journal`,
    the station journal the page's label action writes."""

    def __init__(self, hub: Hub, cfg: HttpConfig, journal: Path | None = None) -> None:
        self.hub = hub
        self.lines: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(cfg, journal), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.lines and self.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.error is not None:
            raise self.error
        self.url = self.lines[0].split()[1]
        self.port = int(self.lines[0].split("/")[2].rsplit(":", 1)[1])

    def _run(self, cfg: HttpConfig, journal: Path | None) -> None:
        async def main() -> None:
            self.task = asyncio.current_task()
            await serve_http(self.hub, cfg, self.lines.append, "line-a", journal=journal)
        try:
            self.loop.run_until_complete(main())
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def call(self, fn: Any, *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> float:
        t0 = time.monotonic()
        assert self.task is not None
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(15)
        return time.monotonic() - t0


def _events(port: int, stop_after: float, idle_s: float = 1.0) -> list[dict[str, Any]]:
    """The ticks of one event stream, read until `stop_after` s or `idle_s` without a line."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=idle_s)
    conn.request("GET", "/api/events")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    ticks, deadline, event = [], time.monotonic() + stop_after, ""
    while time.monotonic() < deadline:
        try:
            line = resp.fp.readline().decode()
        except TimeoutError:
            break
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:") and event == "tick":
            ticks.append({**json.loads(line[5:]), "_t": time.monotonic()})
    conn.close()
    return ticks


def test_event_stream_coalesces_a_burst_and_the_server_stops_promptly_with_streams_open() -> None:
    hub, history = Hub(), MemoryHistory()
    hub.on_status(status(0))
    served = Served(hub, HttpConfig.model_construct(bind="127.0.0.1:0"))  # port 0: any free one
    assert served.lines[0].startswith(f"http: http://127.0.0.1:{served.port}/")
    got: list[list[dict[str, Any]]] = []
    reader = threading.Thread(target=lambda: got.append(_events(served.port, 2.5)))
    reader.start()
    time.sleep(0.5)

    def burst() -> None:
        for seq in range(1, 1001):
            take(hub, history, seq)
    served.call(burst)                                           # 1000 results at once
    reader.join(10)
    ticks = got[0]
    assert ticks[-1]["counters"]["parts"] == 1000                # counters exact
    assert all(len(t.get("rows", [])) <= 20 for t in ticks)      # rows coalesced
    assert sum(t.get("skipped_rows", 0) for t in ticks) >= 900
    gaps = [b["_t"] - a["_t"] for a, b in zip(ticks, ticks[1:], strict=False)]
    assert not gaps or min(gaps) > 0.05                          # at most ~10 ticks a second
    assert ticks[0]["status"]["state"] == "running"
    opened = threading.Thread(target=_events, args=(served.port, 30, 30), daemon=True)   # a stream left open
    opened.start()
    time.sleep(0.3)
    assert served.stop() < 5 and not served.thread.is_alive()
    assert isinstance(served.error, asyncio.CancelledError)     # cancelled, as the CLI does, and nothing else
    with socket.socket() as s:                                   # nothing listens there any more
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (closed connections may be in TIME_WAIT)
        s.bind(("127.0.0.1", served.port))


def test_serve_http_on_a_port_in_use_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            asyncio.run(serve_http(Hub(), HttpConfig(bind=f"127.0.0.1:{s.getsockname()[1]}"), print, "x"))


# --- the page in a real browser ---------------------------------------------------------------------
def _feeder(tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"operator": hash_password(PASSWORD)}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "gateway_web_feeder.py"), "--users", str(users)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("http: "), line
    return proc, line.split()[1]


def wait_js(page: Any, expression: str, timeout: float) -> None:
    """Poll a JS expression until it is truthy. page.evaluate goes through the DevTools protocol, which the
    page's Content-Security-Policy (no eval) does not block; page.wait_for_function evaluates strings in
    the page and would be refused."""
    fn = expression if expression.lstrip().startswith("()") else f"() => ({expression})"
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(fn):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def _screenshot(page: Any, path: Path) -> None:
    """A PNG of the page in 64 colours (a third of the size; the page has few) when Pillow is there."""
    png = page.screenshot()
    try:
        import io

        from PIL import Image
    except ImportError:
        path.write_bytes(png)
        return
    Image.open(io.BytesIO(png)).convert("RGB").quantize(64, method=Image.Quantize.MEDIANCUT,
                                                       dither=Image.Dither.NONE).save(path, optimize=True)
    assert path.stat().st_size > 1000


def _wait_line(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return line
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"no {prefix!r} line from the feeder")


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists(), reason="no /usr/bin/chromium")
def open_page(pw: Any) -> tuple[Any, Any, list[str]]:
    """Headless Chromium (Debian's) with one 1280×900 page; the page's script errors collect in the list."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return browser, page, errors


def test_the_page_in_headless_chromium_keeps_up_with_100_results_per_second(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    proc, url = _feeder(tmp_path)
    shots = Path(os.environ.get("GATEWAY_WEB_SCREENSHOTS") or tmp_path)
    try:
        with playwright.sync_playwright() as pw:
            browser, page, errors = open_page(pw)
            page.goto(url)
            wait_js(page, "document.getElementById('link').textContent === 'live'", timeout=10_000)
            assert page.text_content("#station-id") == "line-a" and page.text_content("#parts") == "0"
            assert proc.stdin is not None
            proc.stdin.write("feed 300 100\n")
            proc.stdin.flush()
            seen = []
            t_end = time.monotonic() + 2.5
            while time.monotonic() < t_end:
                seen.append(int(page.text_content("#parts") or 0))
                time.sleep(0.2)
            assert int(_wait_line(proc, "fed ", 20).split()[1]) == 300
            assert len({s for s in seen if 0 < s < 300}) >= 3 and seen == sorted(seen)   # rising during the feed
            wait_js(page, "document.getElementById('parts').textContent === '300'", timeout=5_000)
            c = {k: int(page.text_content(f"#{k}") or -1) for k in ("passed", "failed", "errors")}
            verdicts = [verdict_of(s) for s in range(1, 301)]
            assert c == {"passed": verdicts.count("pass"), "failed": verdicts.count("fail"),
                         "errors": verdicts.count("error")}
            assert page.locator("#results tr").count() == 20
            assert page.text_content("#results tr:first-child td:nth-child(1)") == "300"
            wait_js(page, "document.getElementById('reject-title').textContent.startsWith('#300 ')", 5_000)
            wait_js(page, """() => { const imgs = [...document.querySelectorAll('#reject-thumbs img')];
                return imgs.length === 6 && imgs.every(i => i.complete && i.naturalWidth > 0); }""", timeout=10_000)
            wait_js(page, "document.getElementById('live').naturalWidth > 0", timeout=5_000)
            assert page.text_content("#p99") == "21.0 ms" and "open" in (page.text_content("#h-camera") or "")
            shots.mkdir(parents=True, exist_ok=True)
            _screenshot(page, shots / "gateway-overview.png")

            page.select_option("#h-verdict", "fail")
            page.fill("#h-part", "0002")
            page.click("#history-form button[type=submit]")
            wait_js(page, "document.querySelectorAll('#history-results tr').length > 0", timeout=5_000)
            verdicts = page.eval_on_selector_all("#history-results td.verdict", "els => els.map(e => e.textContent)")
            assert verdicts and set(verdicts) == {"fail"}
            page.click("#history-results tr:first-child a")
            wait_js(page, """() => { const imgs = [...document.querySelectorAll('#rv-images img')];
                return imgs.length === 6 && imgs.every(i => i.complete && i.naturalWidth > 0); }""", timeout=10_000)
            _screenshot(page, shots / "gateway-result.png")
            page.keyboard.press("Escape")

            assert page.is_hidden("#drift-banner")          # the drift watch: a banner only while it warns
            proc.stdin.write("drift warning\n")
            proc.stdin.flush()
            wait_js(page, "!document.getElementById('drift-banner').hidden", timeout=5_000)
            assert "moved up by 2.4 normal spreads" in (page.text_content("#drift-reason") or "")
            assert (page.text_content("#h-drift") or "").startswith("warning")
            page.evaluate("() => window.scrollTo(0, 0)")
            _screenshot(page, shots / "gateway-drift.png")
            proc.stdin.write("drift ok\n")
            proc.stdin.flush()
            wait_js(page, "document.getElementById('drift-banner').hidden", timeout=5_000)

            page.fill("#login-user", "operator")
            page.fill("#login-password", PASSWORD)
            page.click("#login-form button[type=submit]")
            wait_js(page, "!document.getElementById('logged-in').hidden", timeout=5_000)
            page.click("#ping-button")
            wait_js(page, "document.getElementById('auth-msg').textContent.includes('write access ok')",
                                   timeout=5_000)
            assert not errors, errors
            browser.close()
    finally:
        if proc.stdin is not None:
            proc.stdin.write("quit\n")
            proc.stdin.flush()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
