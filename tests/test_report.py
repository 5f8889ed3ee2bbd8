"""`diffscreen explain` and `diffscreen report`: files written, HTML self-contained and rendered."""

import os
import re
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from diffscreen.cli import main
from diffscreen.models import load_model
from toyrun import write_toy_run

LABELS = ["hit", "miss", "maybe", "miss", "hit", "miss", "hit", "miss"]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    import torch

    from diffscreen.screen import screen

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("rep")
    run = write_toy_run(d / "run.cxi", LABELS, size=256, seed=1)
    out = d / "screen"
    screen([str(run)], out, write_cxi=False)
    return run, out


def _n_gallery(out, n):
    import csv

    with open(out / "scores.csv") as fh:
        lab = [r["label"] for r in csv.DictReader(fh)]
    kept = sum(v in ("hit", "maybe") for v in lab)
    return min(n, kept) + min(n, len(lab) - kept)


def test_explain_cli_writes_overlays_and_raw_maps(screened, tmp_path, capsys):
    from diffscreen.explain import attribute
    from diffscreen.io import open_source
    from diffscreen.models.inference import Classifier

    run, _ = screened
    out = tmp_path / "ex"
    assert main(["explain", str(run), "--method", "gradcam++", "--out", str(out), "--max-frames", "3"]) == 0
    pngs = sorted(out.glob("*_gradcam++.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    with h5py.File(out / "explain_gradcam++.h5") as f:
        maps, x, probs = f["maps"][:], f["input"][:], f["probabilities"][:]
        S = load_model("default").preprocess.out_size  # the bundled model's input side
        assert maps.shape == (3, S, S) and list(f["frame"][:]) == [0, 1, 2]
        assert f.attrs["method"] == "gradcam++" and f.attrs["layer"] == "features.3.2"
        assert list(f["target"][:]) == list(probs.argmax(1))
    # the stored maps are the API's maps of the stored inputs
    clf = Classifier()
    with open_source(str(run)) as src:
        xin = clf.preprocess([src.read(i) for i in range(3)])
    np.testing.assert_allclose(x, xin[:, 0], atol=1e-5)
    np.testing.assert_allclose(maps, attribute(clf.model, xin, method="gradcam++"), rtol=1e-4, atol=1e-6)
    # unknown target class: one ERROR line, exit 2
    capsys.readouterr()
    assert main(["explain", str(run), "--out", str(out), "--target", "crystal"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "crystal" in err and len(err.strip().splitlines()) == 1


def test_report_is_self_contained(screened, tmp_path):
    from diffscreen.explain.report import build_report

    run, out = screened
    page = build_report(out, out=tmp_path / "r.html", gallery=2, tsne_frames=8)
    text = page.read_text()
    imgs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", text)
    # hit rate, confidence, the gallery overlays (up to 2 kept + 2 rejected), t-SNE
    assert len(imgs) == 3 + _n_gallery(out, 2)
    assert all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r"(src|href)=\"(https?:|//|file:)", text)
    assert "Confusion matrix" in text  # labels are embedded in the toy CXI run
    # the confusion matrix agrees with scores.csv and the embedded labels
    import csv

    with open(out / "scores.csv") as fh:
        pred = [r["label"] for r in csv.DictReader(fh)]
    n_hit_hit = sum(t == "hit" and p == "hit" for t, p in zip(LABELS, pred))
    assert re.search(rf"<tr><th>hit</th><td>{n_hit_hit}</td>", text)


def test_report_refuses_a_folder_without_scores(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and "scores.csv" in err


def test_report_renders_in_headless_chromium(screened, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("DIFFSCREEN_REQUIRE_CHROMIUM") == "1":
            pytest.fail("chromium not found but DIFFSCREEN_REQUIRE_CHROMIUM=1")
        pytest.skip("chromium not installed")
    from diffscreen.explain.report import build_report

    _, out = screened
    page = build_report(out, out=tmp_path / "report.html", gallery=1, tsne_frames=8)
    # a copy with a probe script: the title becomes the count of decoded images
    probe = tmp_path / "probe.html"
    probe.write_text(
        page.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', function () {"
            "var im = Array.from(document.images);"
            "document.title = 'decoded ' + im.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length"
            " + ' of ' + im.length; });</script></body>",
        )
    )
    args = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
    ]
    r = subprocess.run(args + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"<title>decoded (\d+) of (\d+)</title>", r.stdout)
    assert m, (r.stdout[:500], r.stderr[-2000:])
    assert int(m.group(2)) == 3 + _n_gallery(out, 1) and m.group(1) == m.group(2)
    shot = tmp_path / "shot.png"
    subprocess.run(args + [f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), float)
    assert img.std() > 10  # not a blank page
