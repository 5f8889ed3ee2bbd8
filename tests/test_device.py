"""--device (issue 17 item 4): parsing and refusing devices, and the device reaching the networks (CPU only here)."""

import pytest
import torch

from diffscreen.cli import main
from diffscreen.errors import ConfigError
from diffscreen.models import device as device_mod
from diffscreen.models.device import rank_device, resolve_device

NO_CUDA = "--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)"


def _gpus(monkeypatch, n):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: n)


def test_resolve_device_parses_names(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "cuda:-1"):
        with pytest.raises(ConfigError, match="not a device"):
            resolve_device(bad)
    with pytest.raises(ConfigError, match="runs on cpu, cuda"):
        resolve_device("meta")
    _gpus(monkeypatch, 0)
    assert resolve_device(None) == resolve_device("auto") == torch.device("cpu")  # the default without a GPU
    with pytest.raises(ConfigError) as e:
        resolve_device("cuda")
    assert str(e.value) == NO_CUDA
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda:0")


def test_resolve_device_counts_the_visible_gpus(monkeypatch):
    _gpus(monkeypatch, 1)
    assert resolve_device(None) == torch.device("cuda")  # the default with a GPU
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ConfigError) as e:
        resolve_device("cuda:1")
    assert str(e.value) == "--device cuda:1: only 1 CUDA device is visible (cuda:0)"


def test_rank_device_spreads_mpi_ranks_over_the_gpus(monkeypatch):
    _gpus(monkeypatch, 2)
    assert [rank_device(torch.device("cuda"), r) for r in range(4)] == [torch.device("cuda", k) for k in (0, 1, 0, 1)]
    assert rank_device(torch.device("cuda", 1), 0) == torch.device("cuda", 1)  # an explicit index is kept
    assert rank_device(torch.device("cpu"), 3) == torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("device")
    run = d / "run.cxi"
    assert main(["simulate", "--out", str(run), "-n", "6", "--seed", "1", "--preset", "wide_hybrid75"]) == 0
    return run


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: --device cuda is valid here")
@pytest.mark.parametrize("command", [
    ["screen", "{run}", "--out", "{tmp}/o"],
    ["screen", "--task", "cdi", "{run}", "--out", "{tmp}/o"],
    ["train", "{run}", "--out", "{tmp}/m.safetensors"],
    ["train", "--task", "cdi", "{run}", "--out", "{tmp}/m.safetensors"],
    ["train", "--task", "diffranet", "{run}", "--out", "{tmp}/m.safetensors"],
    ["explain", "{run}", "--out", "{tmp}/e"],
    ["report", "{tmp}"],
    ["adapt", "--source", "{run}", "--target", "{run}", "--out", "{tmp}/m.safetensors"],
    ["suggest-labels", "{run}", "--out", "{tmp}/l.csv"],
    ["evaluate", "{run}"],
])
def test_unavailable_cuda_is_one_line_and_exit_2(command, tiny_run, tmp_path, capsys):
    args = [a.format(run=tiny_run, tmp=tmp_path) for a in command]
    assert main([*args, "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ERROR: {NO_CUDA}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # refused before any output


def test_classifier_puts_the_network_on_its_device():
    from diffscreen.models.inference import Classifier

    clf = Classifier("fast", device=torch.device("cpu"))
    assert clf.device == torch.device("cpu") and all(p.device.type == "cpu" for p in clf.model.parameters())
    meta = Classifier("fast", device="meta")  # any device torch knows: the network is moved there
    assert meta.device == torch.device("meta")
    assert all(p.device.type == "meta" for p in meta.model.parameters())
    assert all(p.device.type == "meta" for p in meta._net.parameters())


@pytest.fixture
def fake_device(monkeypatch):
    """--device resolves to a fake device ("meta"); what the commands hand down is recorded, and the work runs on
    the CPU.  A command that ignored --device would hand down None (or the CPU) instead."""
    import diffscreen.explain.run as explain_run
    import diffscreen.models.inference as inference
    import diffscreen.train.dann as dann
    import diffscreen.train.loop as loop
    import diffscreen.train.multilabel as multilabel
    import diffscreen.train.transfer as transfer

    seen = []
    monkeypatch.setattr(device_mod, "resolve_device", lambda name=None: torch.device("meta"))

    def spy_training_device(device=None):
        seen.append(("train", device))
        return torch.device("cpu")

    for mod in (loop, multilabel, dann, transfer):
        monkeypatch.setattr(mod, "training_device", spy_training_device)
    init = inference.Classifier.__init__

    def spy_classifier(self, model=None, *, fast=True, device=None):
        seen.append(("classifier", device))
        init(self, model, fast=fast, device=None)

    monkeypatch.setattr(inference.Classifier, "__init__", spy_classifier)
    einit = explain_run.ExplainModel.__init__

    def spy_explain(self, model=None, *, device=None):
        seen.append(("explain", device))
        einit(self, model, device=None)

    monkeypatch.setattr(explain_run.ExplainModel, "__init__", spy_explain)
    return seen


META = torch.device("meta")


def test_screen_hands_the_device_to_the_classifier(fake_device, tiny_run, tmp_path):
    assert main(["screen", str(tiny_run), "--model", "fast", "--out", str(tmp_path / "o"), "--device", "x"]) == 0
    assert ("classifier", META) in fake_device


def test_train_hands_the_device_to_every_recipe(fake_device, tiny_run, tmp_path):
    small = ["--epochs", "1", "--batch-size", "2", "--batches-per-epoch", "1", "--input-size", "168", "--device", "x"]
    assert main(["train", str(tiny_run), "--out", str(tmp_path / "ke.safetensors"), "--model-type", "ke2018",
                 *small]) == 0
    assert fake_device == [("train", META)]
    assert main(["adapt", "--source", str(tiny_run), "--target", str(tiny_run), "--out", str(tmp_path / "d.safetensors"),
                 "--input-size", "168", "--epochs", "1", "--batches-per-epoch", "1", "--batch-size", "2",
                 "--device", "x"]) == 0
    assert fake_device[-1] == ("train", META)
    del fake_device[:]
    assert main(["train", str(tiny_run), "--init", "fast", "--out", str(tmp_path / "t.safetensors"), "--frozen-epochs",
                 "1", "--unfrozen-epochs", "0", "--batch-size", "2", "--batches-per-epoch", "1", "--fractions", "0.5",
                 "0.2", "0.3", "--device", "x"]) == 0
    assert fake_device[0] == ("train", META) and ("classifier", META) in fake_device  # trained, then scored
    cdi = tmp_path / "cdi.cxi"
    assert main(["simulate", "--task", "cdi", "--out", str(cdi), "-n", "6", "--size", "32", "--seed", "0"]) == 0
    assert main(["train", "--task", "cdi", str(cdi), "--out", str(tmp_path / "c.safetensors"), "--input-size", "32",
                 "--width", "4", "--epochs", "1", "--batch-size", "4", "--device", "x"]) == 0
    assert fake_device[-1] == ("train", META)


def test_explain_hands_the_device_to_the_model(fake_device, tiny_run, tmp_path):
    assert main(["explain", str(tiny_run), "--model", "fast", "--out", str(tmp_path / "e"), "--max-frames", "1",
                 "--device", "x"]) == 0
    assert ("explain", META) in fake_device


def test_device_cpu_screens_trains_and_explains(tiny_run, tmp_path):
    assert main(["screen", str(tiny_run), "--model", "fast", "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert (tmp_path / "o" / "scores.csv").read_text().count("\n") == 7
    assert main(["train", str(tiny_run), "--out", str(tmp_path / "m.safetensors"), "--epochs", "1", "--batch-size",
                 "2", "--batches-per-epoch", "1", "--input-size", "168", "--device", "cpu"]) == 0
    from diffscreen.models import read_model_metadata

    assert read_model_metadata(tmp_path / "m.safetensors")["training"]["distributed"]["device"] == "cpu"
    assert main(["explain", str(tiny_run), "--model", "fast", "--out", str(tmp_path / "e"), "--max-frames", "1",
                 "--device", "cpu"]) == 0
