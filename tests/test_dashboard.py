"""The live dashboard (issue 14, item 4): counts, the server, no paths, and the page in headless Chromium."""

import io
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from diffscreen.errors import ConfigError
from diffscreen.live.dashboard import (GradCamExplainer, LiveStats, display_id, parse_bind, render_page, scrub_paths,
                                       serve, thumbnail_image)
from toyrun import toy_frame, write_toy_run

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
DOCS = Path(__file__).resolve().parents[1] / "docs"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


def _scores(p_hit, p_maybe):
    return {"p_hit": p_hit, "p_maybe": p_maybe, "p_miss": 1.0 - p_hit - p_maybe}


def _get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


def _wait_for(cond, what, timeout=60.0):
    """Wait until ``cond()`` is true (the dashboard draws in its own thread); fail with ``what`` if it never is."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


# ------------------------------------------------------------------ counts
def test_counts_rates_histogram_and_series_from_scripted_calls():
    clock = Clock()
    s = LiveStats(run="run0042", clock=clock)
    # second 0: 4 frames (1 hit, 1 maybe, 2 misses), one of them unscored by probabilities
    s.frame("a.cbf //0", True, "hit", _scores(0.90, 0.06), None)     # P(hit)+P(maybe) 0.96 -> bin 19
    s.frame("a.cbf //1", True, "maybe", _scores(0.20, 0.37), None)   # 0.57 -> bin 11
    s.frame("a.cbf //2", False, "miss", _scores(0.01, 0.02), None)   # 0.03 -> bin 0
    s.frame("a.cbf //3", False, "miss", {"n_peaks": 3.0}, None)      # no probabilities: unscored
    clock.t += 1.0
    # second 1: nothing; second 2: 2 frames (1 hit), an error, 5 dropped frames
    clock.t += 1.0
    s.frame("b.cbf //0", True, "hit", {"hit": 1.0, "maybe": 0.0}, None)   # no miss column: 1.0 -> last bin
    s.frame("b.cbf //1", False, "miss", _scores(0.25, 0.25), None)        # exactly 0.5 -> bin 10
    s.error("b.cbf //2", "truncated")
    s.dropped(3)
    s.dropped(2)
    clock.t += 0.5
    assert s.snapshot()["series"]["t"] == [0.0, 1.0]  # complete seconds only
    clock.t += 0.5
    snap = s.snapshot()
    json.dumps(snap)  # JSON-able
    assert snap["frames"] == 6 and snap["kept"] == 3
    assert snap["labels"] == {"hit": 2, "maybe": 1, "miss": 3}
    assert snap["hit_rate"] == pytest.approx(2 / 6) and snap["keep_rate"] == pytest.approx(3 / 6)
    assert snap["errors"] == 1 and snap["dropped"] == 5
    h = snap["histogram"]
    assert len(h["edges"]) == 21 and h["edges"][10] == 0.5 and h["edges"][-1] == 1.0
    expected = [0] * 20
    expected[0] = expected[10] = expected[11] = expected[19] = 1
    expected[19] += 1
    assert h["counts"] == expected and h["unscored"] == 1
    ser = snap["series"]
    assert ser["t"] == [0.0, 1.0, 2.0]
    assert ser["frames"] == [4, 0, 2]
    assert ser["hit_rate"] == [0.25, None, 0.5]
    assert ser["keep_rate"] == [0.5, None, 0.5]
    assert ser["errors"] == [0, 0, 1] and ser["dropped"] == [0, 0, 5]
    # frames/s: the last complete second (second 2: 2 frames) until the loop reports its rate
    assert snap["frames_per_s"] == 2.0
    s.rate(42.5)
    assert s.snapshot()["frames_per_s"] == 42.5
    assert snap["recent_errors"] == [{"id": "b.cbf //2", "message": "truncated", "t": 2.0}]


def test_series_keeps_history_points_and_misuse_is_refused():
    clock = Clock()
    s = LiveStats(clock=clock, history=3)
    for k in range(5):
        s.frame(f"f //{k}", k % 2 == 0, "hit" if k % 2 == 0 else "miss", _scores(0.6, 0.1), None)
        clock.t += 1.0
    ser = s.snapshot()["series"]
    assert ser["t"] == [2.0, 3.0, 4.0] and ser["frames"] == [1, 1, 1]
    assert ser["hit_rate"] == [1.0, 0.0, 1.0]
    with pytest.raises(ConfigError, match="dropped"):
        s.dropped(-1)
    with pytest.raises(ConfigError, match="frames/s"):
        s.rate(-3)
    s.rate(float("nan"))  # unknown, not an error: the frames of the last complete second
    assert s.snapshot()["frames_per_s"] == 1.0
    with pytest.raises(ConfigError, match="bins"):
        LiveStats(bins=0)


def test_paths_are_cut_to_base_names():
    assert display_id("/data/beamtime/run_0001.cbf //3") == "run_0001.cbf //3"
    assert display_id("run_0001.cbf //3") == "run_0001.cbf //3"
    assert display_id("sub/run.h5 //12") == "sub/run.h5 //12"  # relative to the run: kept
    assert display_id("../../secret/run.h5 //12") == "run.h5 //12"
    assert display_id("/gpfs/p1/run.cxi:/entry_1/data_1/data //5") == "run.cxi:/entry_1/data_1/data //5"
    assert display_id("C:\\Users\\me\\run.cbf //0") == "run.cbf //0"
    assert display_id("file:///data/x/run.h5 //1") == "run.h5 //1"
    assert display_id("~/runs/r.cbf") == "r.cbf"
    assert scrub_paths("cannot read /data/beamtime/run_0002.cbf: truncated") == "cannot read run_0002.cbf: truncated"
    assert scrub_paths("'C:\\data\\a.h5' and ~/x/b.cbf") == "'a.h5' and b.cbf"
    assert scrub_paths("line 1\nline 2") == "line 1 line 2"


# ------------------------------------------------------------------ drawing
def test_thumbnail_keeps_a_one_pixel_spot_and_is_log_scaled():
    img = np.zeros((400, 300), np.float32)
    img[123, 221] = 1000.0
    img[5, 5] = np.nan
    img[6, 6] = -50.0
    t = thumbnail_image(img, side=100)  # factor 4
    assert t.shape == (100, 75) and t.dtype == np.float32
    assert t[30, 55] == pytest.approx(np.log1p(1000.0))
    assert np.count_nonzero(t) == 1


def test_render_draws_thumbnails_and_at_most_one_gradcam_a_second():
    from PIL import Image

    clock = Clock()
    s = LiveStats(clock=clock, n_thumbs=2, thumb_side=100)
    calls = []

    def explainer(image):
        calls.append(image.shape)
        heat = np.zeros(image.shape, np.float32)
        heat[:, : image.shape[1] // 2] = 1.0  # the left half
        return heat

    img = np.random.default_rng(0).poisson(5, (300, 400)).astype(np.float32)
    for k in range(3):
        s.frame(f"/data/run //{k}", True, "hit", _scores(0.9, 0.0), img)
    s.frame("/data/run //3", False, "miss", _scores(0.0, 0.0), img)  # not kept: no thumbnail
    assert s.render(explainer) == 2  # only the latest n_thumbs wait
    assert calls == [(300, 400)]  # Grad-CAM for the newest only
    thumbs = s.snapshot()["thumbnails"]
    assert [t["id"] for t in thumbs] == ["run //2", "run //1"]
    assert thumbs[0]["gradcam"] == "cam/3.png" and thumbs[1]["gradcam"] is None
    assert "at most one kept frame a second" in thumbs[1]["note"]
    grey = np.asarray(Image.open(io.BytesIO(s.png(thumbs[0]["image"]))))
    assert grey.shape == (75, 100, 3)  # 300 x 400 by blocks of 4
    cam = np.asarray(Image.open(io.BytesIO(s.png("cam/3.png"))), float)
    assert cam.shape == (75, 100, 3)
    # jet: heat 1 is red, heat 0 blue
    assert cam[:, :50, 0].mean() > cam[:, 50:, 0].mean() + 30 and cam[:, 50:, 2].mean() > cam[:, :50, 2].mean() + 30
    # half a second later: no Grad-CAM; a second later: one
    clock.t += 0.5
    s.frame("run //4", True, "hit", _scores(0.9, 0.0), img)
    s.render(explainer)
    clock.t += 0.5
    s.frame("run //5", True, "hit", _scores(0.9, 0.0), img)
    s.render(explainer)
    assert len(calls) == 2
    thumbs = s.snapshot()["thumbnails"]
    assert [t["gradcam"] is not None for t in thumbs] == [True, False]
    assert s.png("cam/3.png") is None and s.png("thumb/1.png") is None  # gone with their thumbnails
    assert s.snapshot()["explained"] == 2


def test_a_failing_explainer_is_a_note_not_an_exception():
    s = LiveStats()

    def explainer(image):
        raise RuntimeError("cannot open /secret/models/m.safetensors")

    s.frame("x.cbf //0", True, "hit", _scores(1.0, 0.0), np.ones((32, 32), np.float32))
    s.frame("x.cbf //1", True, "hit", _scores(1.0, 0.0), np.ones((4, 4, 4), np.float32))  # not a frame
    assert s.render(explainer) == 2
    t1, t0 = s.snapshot()["thumbnails"]
    assert t0["image"] == "thumb/1.png" and t1["image"] is None and t1["note"].startswith("cannot draw: ")
    s.frame("x.cbf //2", True, "hit", _scores(1.0, 0.0), np.ones((32, 32), np.float32))
    s.render(explainer, explain_interval_s=0)
    snap = s.snapshot()
    assert snap["thumbnails"][0]["note"] == "Grad-CAM failed: cannot open m.safetensors"
    assert snap["explain_note"] == "Grad-CAM failed on 1 frame(s)"


def test_gradcam_explainer_maps_the_crop_back_onto_the_frame():
    rng = np.random.default_rng(3)
    img = toy_frame("hit", rng, 400).astype(np.float32)
    heat = GradCamExplainer("fast")(img)
    assert heat.shape == (400, 400) and heat.dtype == np.float32
    assert heat.max() == pytest.approx(1.0) and heat.min() >= 0
    # the bundled fast model sees the 300 x 300 window from pixel 50 (no geometry: 3/4 of the side)
    assert not heat[:, :50].any() and not heat[:, 350:].any() and not heat[:50].any() and not heat[350:].any()
    assert heat[50:350, 50:350].any()
    with pytest.raises(ConfigError, match="CAM method"):
        GradCamExplainer("fast", method="saliency")


# ------------------------------------------------------------------ the server
def test_parse_bind():
    assert parse_bind("8050") == ("127.0.0.1", 8050)
    assert parse_bind(8050) == ("127.0.0.1", 8050)
    assert parse_bind(":8050") == ("127.0.0.1", 8050)
    assert parse_bind("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_bind("[::1]:0") == ("::1", 0)
    for bad in ("http://x:80", "host:", "99999", "a b:1"):
        with pytest.raises(ConfigError, match="PORT|port"):
            parse_bind(bad)


def test_server_gives_snapshot_page_and_pngs_without_absolute_paths():
    s = LiveStats(run="/data/beamtime/run0042")
    img = np.random.default_rng(1).poisson(5, (64, 64)).astype(np.float32)
    for k in range(7):
        s.frame(f"/data/beamtime/secret/run_{k:04d}.cbf //{k}", k == 3, "hit" if k == 3 else "miss",
                _scores(0.8 if k == 3 else 0.05, 0.1), img if k == 3 else None)
    s.error("/data/beamtime/secret/bad.cbf //0", "cannot read /data/beamtime/secret/bad.cbf: truncated")
    with serve(s) as dash:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", dash.url) and dash.port > 0
        _wait_for(lambda: s.snapshot()["thumbnails"], "the thumbnail")
        status, headers, body = _get(dash.url + "snapshot.json")
        snap = json.loads(body)
        assert status == 200 and snap["frames"] == 7 and snap["kept"] == 1 and snap["errors"] == 1
        assert snap["thumbnails"][0]["id"] == "run_0003.cbf //3"
        status, headers, page = _get(dash.url)
        page = page.decode()
        assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
        assert '<div class="v" id="frames">7</div>' in page and '<div class="v" id="hit_rate">14.3%</div>' in page
        assert "run_0003.cbf //3" in page and "bad.cbf: truncated" in page
        for text in (page, body.decode()):
            assert "/data" not in text and "beamtime" not in text and "secret" not in text
        # no asset from elsewhere
        assert not re.search(r"(src|href)=[\"'](https?:|//|file:)", page) and "<link" not in page
        status, headers, png = _get(dash.url + snap["thumbnails"][0]["image"])
        assert status == 200 and headers["content-type"] == "image/png" and png[:8] == b"\x89PNG\r\n\x1a\n"
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(dash.url + "thumb/999.png")
        assert e.value.code == 404
        # the port is taken: a friendly error
        with pytest.raises(ConfigError, match="choose another port"):
            serve(LiveStats(), f"127.0.0.1:{dash.port}")
    # closed: nothing listens any more
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", dash.port), timeout=2).close()


def test_page_escapes_what_it_shows():
    s = LiveStats(run="<script>alert(1)</script>")
    s.error("</script><b>x //0", "<img src=x onerror=alert(1)>")
    page = render_page(s.snapshot())
    assert "<script>alert" not in page and "</script><b>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)" in page  # the title, escaped
    assert page.count("</script>") == 2  # the two scripts of the page itself


# ------------------------------------------------------------------ headless Chromium
def _chromium(tmp_path, url, *extra):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=2500", *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _shown(dom):
    """The numbers the page shows, by element id, and how often its script has polled."""
    vals = dict(re.findall(r'<div class="v" id="(\w+)">([^<]*)</div>', dom))
    polls = re.search(r'id="status" data-polls="(\d+)"', dom)
    return vals, int(polls.group(1)) if polls else 0


class Feeder:
    """A scripted live loop: toy frames classified once by the bundled fast model, fed from a background thread.

    The clock moves 1/100 s a frame (100 frames/s, so the time series has a
    point a second); the share of kept frames drifts as sample delivery
    would (seeded); every 97th frame fails, every 150th two are dropped.
    Each part ends with a second of misses, one kept frame and half a second
    of misses, so that one of the two newest thumbnails has its Grad-CAM
    (at most one a second), whatever the drawing thread's timing.
    """

    def __init__(self, stats, clock, pool, probs):
        from diffscreen.models.decision import decide

        self.stats, self.clock, self.pool, self.probs = stats, clock, pool, probs
        self.keep, self.labels = decide(probs)
        self.kept_idx, self.rest_idx = np.flatnonzero(self.keep), np.flatnonzero(~self.keep)
        self.rng = np.random.default_rng(7)
        self.t0 = clock.t
        self.k = 0
        self.fed = {"frames": 0, "kept": 0, "hits": 0, "errors": 0, "dropped": 0, "images": 0}

    def _one(self, j):
        fid = f"/beamtime/p12345/raw/run_0042_{self.k // 100:05d}.cbf //{self.k % 100}"
        if self.k % 97 == 96:
            self.stats.error(fid, f"cannot read /beamtime/p12345/raw/run_0042_{self.k // 100:05d}.cbf: truncated")
            self.fed["errors"] += 1
        else:
            keep, p = bool(self.keep[j]), self.probs[j]
            self.stats.frame(fid, keep, self.labels[j], {"p_hit": p[0], "p_maybe": p[1], "p_miss": p[2]},
                             self.pool[j] if keep else None)
            self.fed["frames"] += 1
            self.fed["kept"] += keep
            self.fed["images"] += keep
            self.fed["hits"] += self.labels[j] == "hit"
        if self.k % 150 == 149:
            self.stats.dropped(2)
            self.fed["dropped"] += 2
        self.k += 1
        self.clock.t += 0.01

    def feed(self, n, rate):
        for _ in range(n):
            share = 0.12 + 0.08 * np.sin(2 * np.pi * (self.clock.t - self.t0) / 25)
            idx = self.kept_idx if self.rng.random() < share else self.rest_idx
            self._one(int(self.rng.choice(idx)))
        for _ in range(100):
            self._one(int(self.rest_idx[0]))
        if self.k % 97 == 96:
            self.k += 1  # a kept frame, not an error
        self._one(int(self.kept_idx[0]))
        for _ in range(50):
            self._one(int(self.rest_idx[0]))
        self.stats.rate(rate)


def test_dashboard_in_headless_chromium(tmp_path):
    if CHROMIUM is None:
        if os.environ.get("DIFFSCREEN_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium not found but DIFFSCREEN_REQUIRE_CHROMIUM=1")
        pytest.skip("chromium not installed")
    from diffscreen.io.frame import Frame, FrameMeta
    from diffscreen.models.inference import Classifier

    rng = np.random.default_rng(42)
    labels = ["hit", "miss", "miss", "maybe", "miss", "miss", "hit", "miss", "miss", "miss", "maybe", "miss", "miss"]
    pool = [toy_frame(lab, rng, 256).astype(np.float32) for lab in labels]
    frames = [Frame(p, np.zeros(p.shape, bool), FrameMeta(f"t{k}")) for k, p in enumerate(pool)]
    probs = Classifier("fast").predict(frames)
    clock = Clock()
    stats = LiveStats(run="/beamtime/p12345/raw/run_0042", clock=clock)
    feeder = Feeder(stats, clock, pool, probs)
    assert 0 < feeder.keep.sum() < len(pool)  # the page shows kept frames and rejected ones

    def drawn():  # every kept frame fed so far has its thumbnail
        t = stats.snapshot()["thumbnails"]
        return bool(t) and t[0]["seq"] == feeder.fed["images"]

    part1, go_on = threading.Event(), threading.Event()

    def run():
        feeder.feed(3000, 97.5)  # the first 31.5 s of the run
        part1.set()
        if go_on.wait(120):
            feeder.feed(2400, 103.0)  # 25.5 s more

    with serve(stats, explainer=GradCamExplainer("fast")) as dash:
        bg = threading.Thread(target=run, daemon=True)
        bg.start()
        _wait_for(part1.is_set, "the first part")
        _wait_for(drawn, "the first part's thumbnails")
        r1 = _chromium(tmp_path, dash.url, "--dump-dom")
        v1, polls1 = _shown(r1.stdout)
        assert polls1 >= 1, (r1.stdout[:300], r1.stderr[-1500:])  # the script fetched snapshot.json and redrew
        fed1 = dict(feeder.fed)
        assert v1["frames"] == f"{fed1['frames']:,}" and v1["kept"] == f"{fed1['kept']:,}"
        assert float(v1["hit_rate"].rstrip("%")) == pytest.approx(100 * fed1["hits"] / fed1["frames"], abs=0.051)
        assert float(v1["keep_rate"].rstrip("%")) == pytest.approx(100 * fed1["kept"] / fed1["frames"], abs=0.051)
        assert v1["fps"] == "97.5" and v1["errors"] == str(fed1["errors"]) and v1["dropped"] == str(fed1["dropped"])
        assert len(re.findall(r'<img src="thumb/\d+\.png"', r1.stdout)) == 8  # the gallery is drawn by the script
        assert re.search(r'<img src="cam/\d+\.png"', r1.stdout)  # with a Grad-CAM overlay
        assert re.search(r"<li>run_0042_\d{5}\.cbf //\d+ \([\d.]+ s\): cannot read run_0042_\d{5}\.cbf: truncated</li>",
                         r1.stdout)
        assert "beamtime" not in r1.stdout and "p12345" not in r1.stdout

        go_on.set()
        bg.join(120)
        assert not bg.is_alive()
        _wait_for(drawn, "the second part's thumbnails")
        r2 = _chromium(tmp_path, dash.url, "--dump-dom")
        v2, polls2 = _shown(r2.stdout)
        fed2 = dict(feeder.fed)
        assert polls2 >= 1 and fed2["frames"] == fed1["frames"] + 2551 - (fed2["errors"] - fed1["errors"])
        assert v2["frames"] == f"{fed2['frames']:,}" and v2["kept"] == f"{fed2['kept']:,}" and v2["fps"] == "103.0"
        assert v2["frames"] != v1["frames"] and v2["dropped"] != v1["dropped"]
        assert float(v2["hit_rate"].rstrip("%")) == pytest.approx(100 * fed2["hits"] / fed2["frames"], abs=0.051)

        shot = tmp_path / "dashboard.png"
        _chromium(tmp_path, dash.url, f"--screenshot={shot}", "--window-size=1280,900")
    from PIL import Image

    img = Image.open(shot)
    assert img.size == (1280, 900)
    assert np.asarray(img.convert("L"), float).std() > 10  # not a blank page
    if os.environ.get("DIFFSCREEN_WRITE_DOCS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS / "dashboard.png")


# ------------------------------------------------------------------ a real replay
def test_dashboard_follows_a_replay_through_stream(tmp_path):
    """``diffscreen replay`` → ``stream`` with the dashboard as the loop's observer: the page counts what the loop did."""
    from diffscreen.live.stream import replay, stream

    labels = ["hit", "miss", "maybe", "miss", "miss", "hit", "miss", "miss"] * 2
    run = str(write_toy_run(tmp_path / "run.cxi", labels, size=256, seed=5))
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{sk.getsockname()[1]}"
    stats = LiveStats(run=run)
    with serve(stats) as dash:
        t = threading.Thread(target=lambda: replay(run, endpoint, rate=50, wait_s=20), daemon=True)
        t.start()
        summary = stream(endpoint, tmp_path / "live", until_end=True, idle=30, model="fast", chunk_seconds=0.3,
                         observer=stats)
        t.join(10)
        kept = summary.n_hit + summary.n_maybe
        assert summary.frames_screened == 16 and 0 < kept < 16
        _wait_for(lambda: len(stats.snapshot()["thumbnails"]) == min(kept, 8), "the kept frames' thumbnails")
        snap = json.loads(_get(dash.url + "snapshot.json")[2])
        assert snap["frames"] == 16 and snap["kept"] == kept and snap["errors"] == 0 and snap["dropped"] == 0
        assert snap["labels"].get("hit", 0) == summary.n_hit and sum(snap["histogram"]["counts"]) == 16
        assert snap["hit_rate"] == pytest.approx(summary.n_hit / 16)
        assert all(re.fullmatch(r"run\.cxi(:/\S+)? //\d+", t["id"]) for t in snap["thumbnails"]), snap["thumbnails"]
        page = _get(dash.url)[2].decode()
        assert snap["run"] == "run.cxi" and str(tmp_path) not in page and str(tmp_path) not in json.dumps(snap)


def test_screen_tells_the_dashboard_every_frame(tmp_path, capsys):
    """``screen(..., observer=LiveStats())`` counts what scores.csv holds; ``screen --dashboard`` serves it."""
    import csv

    from diffscreen.cli import main
    from diffscreen.screen import screen

    labels = ["hit", "miss", "maybe", "miss", "hit", "miss"]
    run = str(write_toy_run(tmp_path / "run.cxi", labels, size=256, seed=7))
    stats = LiveStats(run="run.cxi")
    with serve(stats):
        screen([run], tmp_path / "o", model="fast", observer=stats, batch_size=4)
        rows = list(csv.DictReader(open(tmp_path / "o" / "scores.csv")))
        kept = sum(r["label"] in ("hit", "maybe") for r in rows)
        assert 0 < kept < 6
        _wait_for(lambda: len(stats.snapshot()["thumbnails"]) == kept, "the kept frames' thumbnails")
    snap = stats.snapshot()
    assert snap["frames"] == len(rows) == 6 and snap["kept"] == kept
    assert snap["labels"] == {k: sum(r["label"] == k for r in rows) for k in {r["label"] for r in rows}}
    assert sum(snap["histogram"]["counts"]) == 6
    assert main(["screen", run, "--out", str(tmp_path / "c"), "--model", "fast", "--dashboard", "0"]) == 0
    said = capsys.readouterr()
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/", said.out + said.err)
    assert main(["screen", run, "--out", str(tmp_path / "d"), "--task", "cdi", "--dashboard", "0"]) == 2
    assert "--dashboard" in capsys.readouterr().err
