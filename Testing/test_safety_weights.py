"""Weights files are data, never code (issue 25, item 1).

Every ``.pt`` the command line reads -- ``train-segmenter --init-from``, the ``last.pt`` it
resumes from, the ``best.pt`` it exports, ``segment --model`` -- is loaded with
``torch.load(weights_only=True)``.  A file whose pickle would run something is refused in one
``error:`` line naming it, exit code 2, and its payload never runs: each hostile file here would
create a marker file when unpickled the unsafe way, and the marker must not exist afterwards.
"""
import hashlib
import json
import pickle
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from HER2RadiomicsLib.errors import ModelError
from HER2RadiomicsLib.segmentation import training as T
from HER2RadiomicsLib.segmentation.export import export_model
from HER2RadiomicsLib.segmentation.inference import Segmenter
from HER2RadiomicsLib.segmentation.networks import build_network

# what train-segmenter builds from "--base-channels 4" (depth is fixed at 4 by the command)
ARCH = {"name": "unet2d", "version": 1, "base_channels": 4, "depth": 4}
# the refusal a user sees for a weights file whose pickle would run something
REFUSED = "not a plain weights file"
TRAIN_ARGS = ["--epochs", "1", "--size", "32", "--base-channels", "4", "--threads", "1",
              "--batch-size", "4"]


class Payload:
    """Unpickled the unsafe way, this creates the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_pt(path, marker, raw=None):
    """A weights-looking file whose pickle calls ``open(marker, 'w')``: torch's zip format, or a
    bare pickle of protocol ``raw`` (the legacy layout ``torch.load`` also accepts)."""
    obj = {"model": Payload(marker), "arch": ARCH, "size": 32}
    if raw is not None:
        path.write_bytes(pickle.dumps(obj, protocol=raw))
    else:
        torch.save(obj, path)
    return path


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def as_earlier_run(folder):
    """Make ``folder`` a train-segmenter run folder, as an earlier run of the command leaves it
    (with the library's folder-ownership record where it keeps one), so that resuming from it
    is allowed and the weights file in it is what the command meets first."""
    folder.mkdir(exist_ok=True)
    try:
        from HER2RadiomicsLib.outputs import claim_folder
    except ImportError:         # no ownership records: any folder is a run folder
        return folder
    claim_folder(folder, "train-segmenter")
    return folder


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "HER2RadiomicsLib", *map(str, args)],
                          capture_output=True, text=True, timeout=180)


def assert_refused(r, path, *, problem=REFUSED):
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr, r.stderr[-2000:]
    assert len(errs) == 1, r.stderr[-2000:]
    assert str(path) in errs[0] and problem in errs[0], errs[0]


@pytest.fixture(scope="module")
def genuine_run(cohort, tmp_path_factory):
    """A real one-epoch run of the command's network (best.pt, last.pt) on the fixture cohort."""
    out = tmp_path_factory.mktemp("genuine_run")
    ds = T.load_pairs(T.manifest_pairs(cohort / "cohort.csv"), size=32, progress=False)
    tr, va = T.patient_split(ds.patients, 0.3, seed=1)
    T.train(ds.subset(tr), ds.subset(va), out,
            T.TrainConfig(arch=ARCH, epochs=1, batch_size=4, progress=False, threads=1))
    return out


@pytest.mark.parametrize("case", ["init-from", "init-from-raw-pickle", "resume-last.pt",
                                  "export-best.pt", "segment-model"])
def test_hostile_weights_are_refused_unrun(case, cohort, genuine_run, tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    out = tmp_path / "run"
    train = ["train-segmenter", "--manifest", cohort / "cohort.csv", "--out", out, *TRAIN_ARGS]
    if case.startswith("init-from"):
        bad = evil_pt(tmp_path / "evil.pt", marker, raw=5 if case.endswith("pickle") else None)
        args = [*train, "--init-from", bad]
    elif case == "resume-last.pt":
        bad = evil_pt(as_earlier_run(out) / "last.pt", marker)
        args = train
    elif case == "export-best.pt":
        # a genuine last.pt that has finished its one epoch: the run goes straight to export
        shutil.copytree(genuine_run, out)
        bad = evil_pt(as_earlier_run(out) / "best.pt", marker)
        args = train
    else:
        bad = evil_pt(tmp_path / "evil.pt", marker)
        # a card whose sha256 matches: the digest check passes, the load itself must refuse
        (tmp_path / "evil.json").write_text(json.dumps(
            {"sha256": _sha(bad), "architecture": ARCH, "input_size": 32}))
        args = ["segment", "--image", cohort / "images" / "P0001-1.png",
                "--out", tmp_path / "mask.nrrd", "--model", bad]
    before = bad.read_bytes()
    r = run_cli(*args)
    assert not marker.exists(), "the weights file's payload ran"
    assert_refused(r, bad)
    assert bad.read_bytes() == before
    assert not (tmp_path / "mask.nrrd").exists() and not (out / "model.pt").exists()


@pytest.mark.parametrize("case", ["empty", "truncated", "random", "text", "zip-not-torch",
                                  "folder", "missing", "evil-zip", "evil-protocol-0",
                                  "evil-protocol-2", "evil-protocol-5"])
def test_unreadable_weights_one_line_naming_the_file(case, genuine_run, tmp_path):
    """Broken files are a ModelError naming the file -- never a torch traceback -- and a
    hostile one is told apart from a corrupt one."""
    p = tmp_path / f"{case}.pt"
    good = (genuine_run / "best.pt").read_bytes()
    marker = tmp_path / "PAYLOAD_RAN"
    if case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        p.write_bytes(good[:len(good) // 2])
    elif case == "random":
        p.write_bytes(bytes(range(256)) * 3)
    elif case == "text":
        p.write_text("these are not weights\n")
    elif case == "zip-not-torch":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("notes.txt", "hello")
    elif case == "folder":
        p.mkdir()
    elif case.startswith("evil"):
        evil_pt(p, marker, raw=None if case == "evil-zip" else int(case[-1]))
    from HER2RadiomicsLib.segmentation.networks import load_weights
    with pytest.raises(ModelError) as e:
        load_weights(p)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(f"{p}: "), msg
    assert (REFUSED in msg) == case.startswith("evil"), msg
    assert not marker.exists()


def test_segment_model_tells_refusal_from_misfit(genuine_run, tmp_path):
    """A genuine state_dict that does not fit the card's architecture is a misfit, not a
    refusal; a training checkpoint or an arbitrary dict is named for what it is."""
    w = export_model(genuine_run / "best.pt", tmp_path / "m.pt", {"name": "m"})
    card = json.loads(w.with_suffix(".json").read_text())
    card["architecture"]["base_channels"] = 8
    w.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not fit the architecture"):
        Segmenter.load(w)
    other = tmp_path / "other.pt"
    torch.save({"weights": [1, 2, 3]}, other)
    card["architecture"]["base_channels"] = 4
    card["sha256"] = _sha(other)
    other.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not segmentation weights.*'weights'"):
        Segmenter.load(other)


def test_resume_from_pure_data_checkpoint_reproduces_the_uninterrupted_run(cohort, tmp_path):
    """last.pt reads back with weights_only=True, and a run stopped after epoch 1 and resumed
    ends with exactly the weights of a run that was never stopped."""
    ds = T.load_pairs(T.manifest_pairs(cohort / "cohort.csv"), size=32, progress=False)
    tr, va = T.patient_split(ds.patients, 0.3, seed=1)
    kw = dict(arch={**ARCH, "depth": 2}, epochs=2, batch_size=4, progress=False, threads=1)
    whole, split = tmp_path / "whole", tmp_path / "split"
    T.train(ds.subset(tr), ds.subset(va), whole, T.TrainConfig(**kw))
    assert T.train(ds.subset(tr), ds.subset(va), split, T.TrainConfig(max_minutes=1e-9, **kw))[
        "stopped"] == "time-limit"
    T.train(ds.subset(tr), ds.subset(va), split, T.TrainConfig(**kw))
    a = torch.load(whole / "last.pt", weights_only=True)
    b = torch.load(split / "last.pt", weights_only=True)
    assert a["state"]["epoch"] == b["state"]["epoch"] == 2
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert type(b["rng"]["state"]["state"]) is int            # numpy state as Python numbers
    assert b["gen"].dtype == torch.uint8


def test_init_from_accepts_checkpoint_and_exported_state_dict(genuine_run, cohort, tmp_path):
    ds = T.load_pairs(T.manifest_pairs(cohort / "cohort.csv"), size=32, progress=False)
    tr, va = T.patient_split(ds.patients, 0.3, seed=1)
    exported = export_model(genuine_run / "best.pt", tmp_path / "model.pt", {"name": "m"})
    assert Segmenter.load(exported).size == 32                 # a genuine export loads
    ref = torch.load(exported, weights_only=True)
    for src in (exported, genuine_run / "best.pt"):
        out = tmp_path / src.stem
        r = T.train(ds.subset(tr), ds.subset(va), out,
                    T.TrainConfig(arch=ARCH, epochs=1, batch_size=4, progress=False, threads=1,
                                  init_from=src))
        assert r["epochs_run"] == 1
        init, _ = T.read_start_files(out, ARCH, src)
        assert all(torch.equal(init[k], ref[k]) for k in ref)
    notweights = tmp_path / "notweights.pt"
    torch.save({"epoch": 3}, notweights)
    with pytest.raises(ModelError, match="not segmentation weights"):
        T.read_start_files(tmp_path, ARCH, notweights)
    with pytest.raises(ModelError, match="do not fit the network being trained"):
        T.read_start_files(tmp_path, {**ARCH, "base_channels": 8}, exported)
    wrong = build_network({**ARCH, "depth": 2}).state_dict()
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ModelError, match="wrong.pt: weights do not fit"):
        T.read_start_files(tmp_path, ARCH, tmp_path / "wrong.pt")
