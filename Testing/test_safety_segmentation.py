"""Safety of the segmentation commands as a user runs them.

``segment --manifest --out-dir``: a failed or interrupted rerun leaves the previous masks,
manifest.csv and errors.csv complete (never a mix of two runs), and ``--resume`` finishes it;
a mask the user edited is never replaced or removed. ``train-segmenter``: every option, the
manifest and every image (pixel cap before decoding) are checked before anything is written,
in one ``error:`` line; a failed or interrupted run never replaces an earlier model.pt /
model.json and leaves no temporary file.

Findings table rows 12a, 12d, 15, 16, 21 and 24 (``last.pt.tmp``).
"""
import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from HER2RadiomicsLib.cli import main
from HER2RadiomicsLib.errors import ModelError
from HER2RadiomicsLib.segmentation import inference
from HER2RadiomicsLib.segmentation.inference import Segmenter

from test_safety_cli import one_error_line, run, snapshot, write_manifest
from test_segmentation import DarknessNet

TRAIN = ["--epochs", "1", "--size", "32", "--base-channels", "4", "--threads", "1",
         "--batch-size", "4"]


class StandIn:
    """The deterministic stand-in network, counting its calls; call ``stop_at`` is Ctrl-C."""

    def __init__(self, stop_at=None):
        self.seg = Segmenter(DarknessNet(), size=96)
        self.calls, self.stop_at = 0, stop_at

    def predict(self, image, **kw):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return self.seg.predict(image, **kw)


@pytest.fixture
def cases(cohort, tmp_path):
    """Four PNG cases in a folder of the test's own, and a manifest naming them."""
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))[:4]
    d = tmp_path / "imgs"
    d.mkdir()
    for r in rows:
        shutil.copy(cohort / "images" / f"{r['case_id']}.png", d / f"{r['case_id']}.png")
    man = write_manifest(tmp_path / "m.csv", [{"case_id": r["case_id"],
                                               "image": str(d / f"{r['case_id']}.png")}
                                              for r in rows])
    return man, [r["case_id"] for r in rows], d


def use(monkeypatch, net):
    monkeypatch.setattr(inference, "get_segmenter", lambda *a, **k: net)
    return net


def final_set(out):
    """The command's result: every file in DIR but its cache."""
    return {k: v for k, v in snapshot(out).items() if not k.startswith(".segment-parts")}


def flip_images(folder):
    for p in folder.glob("*.png"):
        sitk.WriteImage(sitk.Flip(sitk.ReadImage(str(p)), [True, False]), str(p))


@pytest.mark.parametrize("how", ["interrupted", "failed"])
def test_segment_rerun_that_stops_leaves_the_previous_set(how, cases, tmp_path, monkeypatch,
                                                          capsys):
    man, ids, imgs = cases
    out = tmp_path / "cnn"
    args = ["segment", "--manifest", str(man), "--out-dir", str(out), "--no-progress"]
    use(monkeypatch, StandIn())
    assert main(args) == 0
    before = final_set(out)
    flip_images(imgs)               # every mask of the rerun differs from the first run's
    if how == "interrupted":
        use(monkeypatch, StandIn(stop_at=3))          # Ctrl-C on the third case
        assert main(args) == 130
    else:                           # every mask made, then writing the tables fails
        use(monkeypatch, StandIn())
        import HER2RadiomicsLib.outputs as outputs
        from HER2RadiomicsLib.errors import InputError

        def disk_full(path, *a, **k):
            raise InputError(f"{path}: cannot write (No space left on device)")
        monkeypatch.setattr(outputs, "write_csv", disk_full)
        assert main(args) == 2
    assert final_set(out) == before            # not new masks beside the old manifest
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]
    monkeypatch.undo()
    # --resume computes only what the stopped run did not finish, and ends as a fresh run
    net = use(monkeypatch, StandIn())
    assert main(args + ["--resume"]) == 0
    assert net.calls == (2 if how == "interrupted" else 0)
    fresh = tmp_path / "fresh"
    assert main(["segment", "--manifest", str(man), "--out-dir", str(fresh),
                 "--no-progress"]) == 0
    for cid in ids:
        assert (out / f"{cid}.nrrd").read_bytes() == (fresh / f"{cid}.nrrd").read_bytes()
    assert pd.read_csv(out / "manifest.csv").case_id.tolist() == ids


def _edit(mask_path):
    """Change a mask in place, as an editor saving over it does."""
    m = sitk.ReadImage(str(mask_path))
    a = sitk.GetArrayFromImage(m)
    a[:4, :4] = 1 - a[:4, :4]
    e = sitk.GetImageFromArray(a)
    e.CopyInformation(m)
    sitk.WriteImage(e, str(mask_path))
    return mask_path.read_bytes()


def test_segment_never_replaces_a_mask_edited_by_hand(cases, tmp_path, monkeypatch, capsys):
    man, ids, imgs = cases
    first = write_manifest(tmp_path / "first.csv", list(csv.DictReader(open(man)))[:2])
    out = tmp_path / "cnn"
    args = ["--out-dir", str(out), "--no-progress"]
    use(monkeypatch, StandIn())
    assert main(["segment", "--manifest", str(first), *args]) == 0
    edited = _edit(out / f"{ids[0]}.nrrd")
    capsys.readouterr()
    # the usual workflow: correct a mask, add cases, --resume: the correction is kept and said
    assert main(["segment", "--manifest", str(man), *args, "--resume"]) == 0
    said = capsys.readouterr().out
    assert (out / f"{ids[0]}.nrrd").read_bytes() == edited
    assert ids[0] in said and "edited by hand" in said
    m = pd.read_csv(out / "manifest.csv").set_index("case_id")
    assert "edited by hand" in m.loc[ids[0], "cnn_flags"]
    assert all((out / f"{c}.nrrd").exists() for c in ids)
    # without --resume the rerun would redraw it: refused in one line, nothing changed
    before = snapshot(out)
    assert main(["segment", "--manifest", str(man), *args]) == 2
    one_error_line(capsys.readouterr().err, out / f"{ids[0]}.nrrd", "--resume")
    assert snapshot(out) == before
    # a case left out of the manifest: its edited mask stays all the same
    rest = write_manifest(tmp_path / "rest.csv", list(csv.DictReader(open(man)))[1:])
    assert main(["segment", "--manifest", str(rest), *args, "--resume"]) == 0
    assert (out / f"{ids[0]}.nrrd").read_bytes() == edited
    assert f"{ids[0]}.nrrd" in capsys.readouterr().out
    # a new case whose mask name is taken by a file segment never wrote: refused up front
    rows = list(csv.DictReader(open(man)))
    more = write_manifest(tmp_path / "more.csv", rows + [{**rows[0], "case_id": "NEW"}])
    mine = out / "NEW.nrrd"
    mine.write_bytes(b"my own notes")
    before = snapshot(out)
    assert main(["segment", "--manifest", str(more), *args, "--resume"]) == 2
    one_error_line(capsys.readouterr().err, mine, "not written by")
    assert snapshot(out) == before


# -- train-segmenter -----------------------------------------------------------------------

@pytest.mark.parametrize("option", [
    ["--size", "0"], ["--size", "-32"], ["--size", "40"], ["--epochs", "-1"],
    ["--lr", "nan"], ["--lr", "0"], ["--batch-size", "0"], ["--base-channels", "0"],
    ["--val-fraction", "1.5"], ["--val-fraction", "0"], ["--max-minutes", "-1"],
    ["--patience", "0"], ["--device", "tpu"], ["--threads", "0"]])
def test_train_segmenter_options_refused_up_front(option, cohort, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["train-segmenter", "--manifest", str(cohort / "cohort.csv"), "--out", str(out),
              *TRAIN, *option])
    assert e.value.code == 2
    one_error_line(capsys.readouterr().err, option[0])
    assert not out.exists()


def earlier_run(folder):
    """A run folder as an earlier, successful run leaves it (its model is just bytes here)."""
    from HER2RadiomicsLib.outputs import claim_folder
    claim_folder(folder, "train-segmenter")
    (folder / "model.pt").write_bytes(b"earlier weights")
    (folder / "model.json").write_text('{"sha256": "earlier"}')
    return snapshot(folder)


@pytest.mark.parametrize("problem", ["bom-no-mask-column", "missing-image", "no-mask-for-image",
                                     "over-pixel-cap"])
def test_train_segmenter_inputs_one_line_before_anything_is_written(problem, cohort, tmp_path,
                                                                   capsys):
    out = tmp_path / "run"
    before = earlier_run(out)
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))[:4]
    env = None
    if problem == "bom-no-mask-column":
        src = tmp_path / "m.csv"
        src.write_text("\ufeffcase_id,image\n" + "".join(
            f"{r['case_id']},{cohort / r['image']}\n" for r in rows), encoding="utf-8")
        args, names = ["--manifest", src], [src, "mask"]
    elif problem == "missing-image":
        src = write_manifest(tmp_path / "m.csv", [
            {"case_id": r["case_id"], "image": str(cohort / r["image"]),
             "mask": str(cohort / r["mask"])} for r in rows] + [
            {"case_id": "GONE", "image": str(tmp_path / "gone.png"),
             "mask": str(cohort / rows[0]["mask"])}])
        args, names = ["--manifest", src], [src, "gone.png"]
    else:
        imgs, masks = tmp_path / "imgs", tmp_path / "masks"
        imgs.mkdir()
        masks.mkdir()
        for r in rows:
            shutil.copy(cohort / r["image"], imgs / f"{r['case_id']}.png")
            shutil.copy(cohort / r["mask"], masks / f"{r['case_id']}.png")
        if problem == "no-mask-for-image":
            shutil.copy(cohort / rows[0]["image"], imgs / "EXTRA.png")
            names = [imgs / "EXTRA.png", "no mask"]
        else:
            # the cap is read from the header: the last image is over it, the others are not
            big = sitk.Image(1000, 1000, sitk.sitkUInt8)
            sitk.WriteImage(big, str(imgs / "ZZ-big.png"))
            sitk.WriteImage(big, str(masks / "ZZ-big.png"))
            env = {"HER2RADIOMICS_MAX_PIXELS": "500000"}
            names = [imgs / "ZZ-big.png", "500,000-pixel limit"]
        args = ["--images", imgs, "--masks", masks]
    argv = ["train-segmenter", *args, "--out", out, *TRAIN, "--no-resume"]
    if env:         # as a user runs it, with the cap set in the environment
        rc, stdout, err = run(argv, env=env)
    else:           # the same in-process (the suite's time budget)
        rc = main([str(a) for a in argv])
        stdout, err = capsys.readouterr()
    assert rc == 2, err
    one_error_line(err, *names)
    assert "loading" not in stdout                      # refused before any image was read
    assert snapshot(out) == before                      # no checkpoint, no history, no model


@pytest.mark.parametrize("stop", ["interrupted-export", "failed-export",
                                  "interrupted-checkpoint"])
def test_train_segmenter_stopped_keeps_the_earlier_model(stop, cohort, tmp_path, monkeypatch,
                                                         capsys):
    import torch
    from HER2RadiomicsLib.segmentation import export
    out = tmp_path / "run"
    earlier_run(out)
    model = {n: (out / n).read_bytes() for n in ("model.pt", "model.json")}
    if stop == "interrupted-export":            # Ctrl-C while the new model is validated
        def boom(*a, **k):
            raise KeyboardInterrupt
        monkeypatch.setattr(export, "measure_latency", boom)
    elif stop == "failed-export":
        def boom(weights, **k):
            raise ModelError(f"{weights}: cannot complete the model card")
        monkeypatch.setattr(export, "update_model_card", boom)
    else:                                       # Ctrl-C in the middle of writing last.pt
        real = torch.save

        def boom(obj, f, *a, **k):
            real(obj, f, *a, **k)
            if str(f).endswith("last.pt.tmp"):
                raise KeyboardInterrupt
        monkeypatch.setattr(torch, "save", boom)
    rc = main(["train-segmenter", "--manifest", str(cohort / "cohort.csv"), "--out", str(out),
               *TRAIN, "--no-resume"])
    assert rc == (2 if stop == "failed-export" else 130)
    assert {n: (out / n).read_bytes() for n in model} == model
    leftovers = [p.name for p in out.iterdir() if p.name.endswith(".tmp") or "pending" in p.name]
    assert leftovers == []
    if stop != "failed-export":
        return
    errs = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and "cannot complete the model card" in errs[0], errs
    # and a run that completes replaces both, together (latency timing is not the point here)
    monkeypatch.undo()
    monkeypatch.setattr(export, "measure_latency", lambda *a, **k: {"not": "measured"})
    assert main(["train-segmenter", "--manifest", str(cohort / "cohort.csv"), "--out",
                 str(out), *TRAIN, "--no-resume"]) == 0
    card = json.loads((out / "model.json").read_text())
    assert card["sha256"] == export.sha256_of(out / "model.pt")
    assert np.isfinite(card["validation"]["mean_dice"])


def test_segment_folder_of_the_earlier_layout_is_taken_over(cases, tmp_path, monkeypatch):
    """A folder the previous version wrote (masks straight into DIR, none listed in the
    ownership record, records without a cached mask) is resumed without redrawing, and a rerun
    replaces its files instead of calling them someone else's."""
    from HER2RadiomicsLib.outputs import MARKER
    man, ids, _ = cases
    out = tmp_path / "cnn"
    args = ["segment", "--manifest", str(man), "--out-dir", str(out), "--no-progress"]
    use(monkeypatch, StandIn())
    assert main(args) == 0
    mark = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**mark, "files": []}))
    for p in (out / ".segment-parts").iterdir():
        if p.suffix == ".nrrd":
            p.unlink()
        else:
            rec = json.loads(p.read_text())
            p.write_text(json.dumps({k: rec[k] for k in ("case_id", "key", "mask_sha256")}))
    net = use(monkeypatch, StandIn())
    assert main(args + ["--resume"]) == 0
    assert net.calls == 0
    assert main(args) == 0 and net.calls == len(ids)
    assert sorted(json.loads((out / MARKER).read_text())["files"]) == sorted(
        [f"{c}.nrrd" for c in ids] + ["errors.csv", "manifest.csv"])
