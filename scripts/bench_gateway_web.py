"""Does the operator page keep up with 100 results/s? A gateway process (tests/gateway_web_feeder.py: the real
web server over a Hub fed made-up results, failed parts with images, plus previews and status) and a real
headless Chromium showing the page; the page's parts counter is sampled every 50 ms and compared with
what had been fed at that moment.

    OMP_NUM_THREADS=1 python scripts/bench_gateway_web.py [--rate 100] [--seconds 30] [--baseline-s 10]
        [--images all|failed] [--json docs/research/bench/gateway/web.json]

Reported: the largest and p99 lag between fed and shown counter (in results and in seconds), how long the
page took to show the final count after the feed ended, the slowest page.evaluate round trip (the page's
main thread staying responsive), and the gateway process's CPU (% of one core) with no page open
(baseline) and with the page open; that process also generates the results it is fed.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime + stime


class Feeder:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "gateway_web_feeder.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("http: "):
            raise SystemExit(f"the gateway did not start: {line!r}")
        self.url = line.split()[1]
        self.progress: list[tuple[float, int]] = []   # (wall time, results fed)
        self.fed = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            parts = line.split()
            if parts[:1] == ["progress"]:
                self.progress.append((float(parts[1]), int(parts[2])))
            elif parts[:1] == ["fed"]:
                self.fed.set()

    def feed(self, n: int, rate: float, images: str) -> None:
        self.fed.clear()
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"feed {n} {rate} {images}\n")
        self.proc.stdin.flush()

    def fed_at(self, t: float) -> float:
        """Results fed by wall time t (linear between progress lines, 0.1 s apart)."""
        pts = self.progress
        times = [p[0] for p in pts]
        i = bisect.bisect_right(times, t)
        if i == 0:
            return 0.0
        if i == len(pts):
            return float(pts[-1][1])
        (t0, c0), (t1, c1) = pts[i - 1], pts[i]
        return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else float(c1)

    def time_of(self, count: int) -> float | None:
        """Wall time at which `count` results had been fed (interpolated)."""
        for (t0, c0), (t1, c1) in zip(self.progress, self.progress[1:], strict=False):
            if c0 <= count <= c1:
                return t0 + (t1 - t0) * ((count - c0) / (c1 - c0) if c1 > c0 else 0.0)
        return None

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


def run(rate: float, seconds: float, baseline_s: float, images: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    feeder = Feeder()
    pid = feeder.proc.pid
    try:
        baseline: dict[str, Any] = {}
        if baseline_s > 0:   # the same feed with no page open: the server's own cost
            n = int(rate * baseline_s)
            c0, t0 = cpu_seconds(pid), time.monotonic()
            feeder.feed(n, rate, images)
            feeder.fed.wait(baseline_s * 3 + 10)
            baseline = {"seconds": round(time.monotonic() - t0, 2), "results": n,
                        "gateway_cpu_percent": round(100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0), 1)}
        feeder.progress.clear()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests: dict[str, int] = {"image": 0, "preview": 0, "other": 0}

            def count(req: Any) -> None:
                kind = "image" if "/api/image/" in req.url else "preview" if "preview.jpg" in req.url else "other"
                requests[kind] += 1
            page.on("request", count)
            page.goto(feeder.url)
            while page.evaluate("() => document.getElementById('link').textContent") != "live":
                time.sleep(0.05)
            start_count = int(page.evaluate("() => document.getElementById('parts').textContent"))
            requests.update(image=0, preview=0, other=0)
            n = int(rate * seconds)
            c0, t0 = cpu_seconds(pid), time.monotonic()
            feeder.progress.append((time.time(), start_count))   # counts are absolute (hub.counters.parts)
            feeder.feed(n, rate, images)
            samples: list[tuple[float, int]] = []   # (wall time, parts shown)
            rtts: list[float] = []
            final = start_count + n
            t_fed = None
            while True:
                a = time.time()
                shown = int(page.evaluate("() => document.getElementById('parts').textContent"))
                b = time.time()
                rtts.append(b - a)
                samples.append(((a + b) / 2, shown))
                if feeder.fed.is_set() and t_fed is None:
                    t_fed = time.time()
                if shown >= final or (t_fed is not None and time.time() - t_fed > 30):
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
            cpu = 100 * (cpu_seconds(pid) - c0) / elapsed
            done_shown = time.time()
            browser.close()
        fed_end = feeder.progress[-1][0] if feeder.progress else done_shown
        lags = [max(0.0, feeder.fed_at(t) - s) for t, s in samples if t <= fed_end]
        time_lags = []
        for t, s in samples:
            ts = feeder.time_of(s) if s > start_count else None
            if ts is not None and t <= fed_end:
                time_lags.append(max(0.0, t - ts))
        achieved = (feeder.progress[-1][1] - feeder.progress[0][1]) / (feeder.progress[-1][0] - feeder.progress[0][0])
        return {
            "images_on": images, "rate_requested": rate, "rate_achieved": round(achieved, 1), "seconds": seconds, "results": n,
            "shown_final": samples[-1][1] - start_count, "kept_up": samples[-1][1] == final,
            "samples": len(samples), "sample_period_s": 0.05,
            "max_lag_results": round(max(lags), 1), "p99_lag_results": round(pct(lags, 0.99), 1),
            "mean_lag_results": round(sum(lags) / len(lags), 1),
            "max_lag_s": round(max(time_lags), 3), "p99_lag_s": round(pct(time_lags, 0.99), 3),
            "final_count_shown_after_feed_s": round(max(0.0, done_shown - fed_end), 3),
            "max_page_evaluate_s": round(max(rtts), 3), "p99_page_evaluate_s": round(pct(rtts, 0.99), 3),
            "gateway_cpu_percent_with_page": round(cpu, 1), "baseline_without_page": baseline,
            "page_requests_during_feed": requests, "page_errors": errors,
        }
    finally:
        feeder.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--baseline-s", type=float, default=10.0)
    ap.add_argument("--images", choices=["all", "failed"], default="all",
                    help="which parts carry their 6 PNGs (the station's publish.send_images; default all)")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "research" / "bench" / "gateway" / "web.json")
    args = ap.parse_args()
    result = run(args.rate, args.seconds, args.baseline_s, args.images)
    result = {"bench": "gateway web page at a steady result rate", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "chromium": CHROMIUM, "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
              "command": " ".join(["python", "scripts/bench_gateway_web.py", *sys.argv[1:]]), **result}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
