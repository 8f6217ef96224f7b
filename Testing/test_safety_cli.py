"""Safety of the command line as a user runs it (a subprocess each): no output overwrites an
input, no folder a command did not make is emptied, a resumed run never reuses a result of
changed files, a failed run names the file in one stderr line and replaces nothing.

Issue 25, items 2-5, 8 and 9 (weights files: test_safety_weights.py; bundles:
test_safety_bundle.py; reports: test_safety_reports.py; modelling inputs:
test_safety_modelling.py).
"""
import csv
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

CLI = [sys.executable, "-m", "HER2RadiomicsLib"]


def run(args, cwd=None, env=None, **kw):
    e = dict(os.environ, **(env or {}))
    r = subprocess.run(CLI + [str(a) for a in args], cwd=cwd, env=e, capture_output=True,
                       text=True, timeout=300, **kw)
    return r.returncode, r.stdout, r.stderr


def one_error_line(err, *must):
    """Exactly one non-empty stderr line, ``error: ...``, no traceback, no 'unexpected'."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err and "unexpected" not in err, err
    for m in must:
        assert str(m) in lines[0], (m, lines[0])
    return lines[0]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def write_manifest(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture
def case(cohort, tmp_path):
    """One ultrasound case copied into a folder of the test's own: (image, mask)."""
    d = tmp_path / "cases"
    d.mkdir()
    img, m = d / "P0001-1.dcm", d / "P0001-1.png"
    shutil.copy(cohort / "images" / "P0001-1.dcm", img)
    shutil.copy(cohort / "masks" / "P0001-1.png", m)
    return img, m


@pytest.fixture
def small_manifest(cohort, tmp_path):
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))[:3]
    rows = [{"case_id": r["case_id"], "image": str(cohort / r["image"]),
             "mask": str(cohort / r["mask"])} for r in rows]
    return write_manifest(tmp_path / "m.csv", rows), rows


# -- item 3: an output may never be one of the inputs ------------------------------------------

def test_outputs_that_are_inputs_are_refused_and_the_inputs_untouched(case, small_manifest,
                                                                     tmp_path):
    img, m = case
    man, _ = small_manifest
    table = tmp_path / "t.csv"
    table.write_text("case_id,reader,f\nA,R1,1\nA,R2,2\nB,R1,3\nB,R2,4\n")
    seg_dir = img.parent
    seg_man = write_manifest(seg_dir / "manifest.csv",
                             [{"case_id": "P0001-1", "image": img.name}])
    link = tmp_path / "link.csv"
    link.symlink_to(man)                     # an output reached through a symbolic link
    bundle = tmp_path / "b.zip"
    bundle.write_bytes(b"PK")                # never opened: the refusal comes first
    cases = [
        (["extract", "--manifest", man, "--out", man], man),
        (["extract", "--manifest", man, "--out", link], link),
        (["extract", "--image", img, "--mask", m, "--out", m], m),
        (["predict", "--bundle", bundle, "--features", table, "--out", table], table),
        (["icc", "--table", table, "--out", table], table),
        (["eval-segmenter", "--manifest", man, "--pred-dir", tmp_path, "--out", man], man),
        (["segment", "--image", img, "--out", img], img),
        (["segment", "--image", img, "--out", tmp_path / "o.nrrd", "--prob-out", img], img),
        (["segment", "--manifest", seg_man, "--out-dir", seg_dir], seg_dir / "manifest.csv"),
        (["report", "--bundle", bundle, "--image", img, "--mask", m, "--out", img], img),
    ]
    before = snapshot(tmp_path)
    for args, victim in cases:
        rc, out, err = run(args)
        assert rc == 2, (args, out, err)
        one_error_line(err, victim, "also an input")
        assert snapshot(tmp_path) == before, args
    assert link.is_symlink()


# -- item 2: a folder a command did not make is refused, never emptied -------------------------

@pytest.fixture(scope="module")
def tiny_training(tmp_path_factory):
    """A 40-patient feature table, its labels and a two-step recipe (trains in seconds)."""
    import yaml
    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    y = np.array(["pos", "neg"] * 20)
    X = rng.normal(size=(40, 5))
    X[:, 0] += (y == "pos") * 1.5
    ids = [f"C{i:03d}" for i in range(40)]
    f = pd.DataFrame(X, columns=[f"tumor__original_firstorder_F{i}" for i in range(5)])
    f.insert(0, "case_id", ids)
    f.to_csv(d / "features.csv", index=False)
    pd.DataFrame({"case_id": ids, "patient_id": ids, "label": y, "site": "A"}).to_csv(
        d / "labels.csv", index=False)
    yaml.safe_dump({"name": "tiny", "title": "tiny", "params": "default", "regions": ["tumor"],
                    "task": {"positive": ["pos"], "negative": ["neg"]}, "label_col": "label",
                    "batch_col": "site", "group_col": "patient_id",
                    "pipeline": ["impute", "scale"], "classifiers": ["logistic"],
                    "primary": "logistic", "clinical": [],
                    "evaluation": {"test_size": 0.3, "external_site": None, "repeats": 0,
                                   "bootstrap": 50, "seed": 1}}, open(d / "tiny.yaml", "w"))
    return d


def test_train_never_empties_a_folder_it_did_not_make(tiny_training, tmp_path):
    d = tiny_training
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "images" / "a.png").write_bytes(b"img")
    shutil.copy(d / "features.csv", data / "features.csv")
    before = snapshot(data)
    train = ["train", "--recipe", d / "tiny.yaml", "--features", data / "features.csv",
             "--labels", d / "labels.csv", "--no-external"]
    rc, out, err = run(train + ["--out", data])
    assert rc == 2
    one_error_line(err, data, "not empty and was not made")
    rc, out, err = run(train + ["--out", "."], cwd=data)        # `--out .` in a data folder
    assert rc == 2
    one_error_line(err, "not empty and was not made")
    assert snapshot(data) == before
    # (a rerun into a folder train made replaces only train's files: test_outputs_atomic's
    # staged_dir tests) -- but such a folder is not another command's to write into
    from HER2RadiomicsLib.outputs import claim_folder
    model = claim_folder(tmp_path / "model", "train")
    rc, _, err = run(["reader-study", "--manifest", d / "labels.csv", "--out", model])
    assert rc == 2
    one_error_line(err, "written by 'her2radiomics train'")


def test_a_file_named_like_our_lock_is_never_overwritten_or_deleted(case, tmp_path):
    img, m = case
    out = tmp_path / "f.csv"
    mine = tmp_path / "f.csv.lock"
    mine.write_text("my notes about f.csv")
    rc, _, err = run(["extract", "--image", img, "--mask", m, "--params", "cui2023",
                      "--out", out, "--no-progress"])
    assert rc == 2
    one_error_line(err, mine, "not a her2radiomics lock")
    assert mine.read_text() == "my notes about f.csv" and not out.exists()


def test_symlinked_output_is_written_through_and_locked_on_its_target(case, tmp_path):
    img, m = case
    real = tmp_path / "real" / "f.csv"
    real.parent.mkdir()
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    rc, out, err = run(["extract", "--image", img, "--mask", m, "--params", "cui2023",
                        "--out", link, "--no-progress"])
    assert rc == 0, err
    assert link.is_symlink() and len(pd.read_csv(real)) == 1      # through the link
    # a run holding the lock through one name blocks a run through the other
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from HER2RadiomicsLib.outputs import output_lock\n"
        f"with output_lock({str(real)!r}):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, _, err = run(["extract", "--image", img, "--mask", m, "--params", "cui2023",
                          "--out", link, "--no-progress"])
        assert rc == 2
        one_error_line(err, "another run is writing it")
    finally:
        holder.kill()
        holder.wait()


# -- item 4: --resume never reuses a result of changed files -----------------------------------

def test_resume_recomputes_a_case_whose_mask_changed(cohort, tmp_path):
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))[:2]
    d = tmp_path / "c"
    d.mkdir()
    for r in rows:
        for c in ("image", "mask"):
            shutil.copy(cohort / r[c], d / os.path.basename(r[c]))
    man = write_manifest(d / "m.csv", [{"case_id": r["case_id"], "image": os.path.basename(
        r["image"]), "mask": os.path.basename(r["mask"])} for r in rows])
    out = tmp_path / "f.csv"
    args = ["extract", "--manifest", man, "--params", "cui2023", "--out", out, "--no-progress"]
    assert run(args)[0] == 0
    first = pd.read_csv(out).set_index("case_id")
    # the reader redraws case 0's contour: a smaller lesion (eroded), same file name
    mpath = d / os.path.basename(rows[0]["mask"])
    mk = sitk.ReadImage(str(mpath))
    arr = sitk.GetArrayFromImage(mk)
    from scipy import ndimage as ndi
    smaller = (ndi.binary_erosion(arr > 0, iterations=3) * 255).astype(arr.dtype)
    out_img = sitk.GetImageFromArray(smaller)
    out_img.CopyInformation(mk)
    sitk.WriteImage(out_img, str(mpath))
    rc, text, err = run(args + ["--resume"])
    assert rc == 0, err
    assert "1 resumed from earlier parts" in text            # the unchanged case only
    again = pd.read_csv(out).set_index("case_id")
    energy = "tumor__original_firstorder_TotalEnergy"       # grows with the lesion's pixels
    c0, c1 = rows[0]["case_id"], rows[1]["case_id"]
    assert again.loc[c0, energy] < first.loc[c0, energy]      # recomputed from the new mask
    assert again.loc[c1].equals(first.loc[c1])
    fresh = tmp_path / "fresh.csv"
    assert run(["extract", "--manifest", man, "--params", "cui2023", "--out", fresh,
                "--no-progress"])[0] == 0
    pd.testing.assert_frame_equal(again, pd.read_csv(fresh).set_index("case_id"))


def test_segment_resume_redraws_the_mask_of_a_changed_image(cohort, tmp_path):
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))[:2]
    d = tmp_path / "imgs"
    d.mkdir()
    for r in rows:
        shutil.copy(cohort / r["image"], d / f"{r['case_id']}.dcm")
    man = write_manifest(tmp_path / "m.csv", [{"case_id": r["case_id"],
                                               "image": str(d / f"{r['case_id']}.dcm")}
                                              for r in rows])
    out = tmp_path / "cnn"
    args = ["segment", "--manifest", man, "--out-dir", out, "--no-progress"]
    assert run(args)[0] == 0
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{r['case_id']}.nrrd")))
            for r in rows)
    assert not np.array_equal(a, b)
    # case 0's file now holds case 1's image: its old mask must not be reused
    shutil.copy(d / f"{rows[1]['case_id']}.dcm", d / f"{rows[0]['case_id']}.dcm")
    assert run(args + ["--resume"])[0] == 0
    a2 = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{rows[0]['case_id']}.nrrd")))
    assert np.array_equal(a2, b)


# -- item 5: an interrupted reader study leaves the previous set complete ----------------------

def test_interrupted_reader_study_keeps_the_previous_set(cohort, tmp_path, monkeypatch):
    from HER2RadiomicsLib.cli import main
    import HER2RadiomicsLib.reports.reader_study as study
    out = tmp_path / "rs"
    args = ["reader-study", "--manifest", str(cohort / "readers.csv"), "--params", "cui2023",
            "--out", str(out), "--no-progress"]
    assert main(args) == 0
    before = snapshot(out)

    def boom(*a, **k):          # Ctrl-C after icc.csv and the plots, before the summary
        raise KeyboardInterrupt
    monkeypatch.setattr(study, "write_summary_html", boom)
    assert main(args + ["--threshold", "0.5"]) == 130
    after = snapshot(out)
    assert after == before      # not a new icc.csv beside an old summary
    assert not [p for p in out.iterdir() if p.name.startswith(".staging")]


# -- item 8: one line on stderr, naming the file ------------------------------------------------

def test_failed_single_case_extract_is_one_stderr_line(case, tmp_path):
    img, m = case
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG not really")
    rc, out, err = run(["extract", "--image", img, "--mask", bad, "--out", tmp_path / "f.csv",
                        "--no-progress"])
    assert rc == 2 and out == ""
    one_error_line(err, bad)


@pytest.mark.parametrize("args,must", [
    (["synth", "--out", "{tmp}/s", "--seed", "-1"], "--seed -1"),
    (["eval-segmenter", "--manifest", "{man}", "--pred-dir", "/nonexistent/pred",
      "--out", "{tmp}/e.csv"], "/nonexistent/pred"),
    (["extract", "--manifest", "{man}", "--combined", "8", "--out", "{tmp}/f.csv"],
     "--combined 8"),
])
def test_bad_values_are_one_line(args, must, small_manifest, tmp_path):
    man, _ = small_manifest
    args = [a.format(tmp=tmp_path, man=man) for a in args]
    rc, out, err = run(args)
    assert rc == 2
    one_error_line(err, must)


def test_a_full_disk_names_the_file_and_replaces_nothing(case, tmp_path):
    """A write cut short by the file-size limit (what a full disk does to a write): one line
    naming the file, the previous table intact."""
    import resource
    import signal
    img, m = case
    out = tmp_path / "f.csv"
    base = ["extract", "--image", img, "--mask", m, "--params", "cui2023", "--out", out,
            "--no-progress"]
    assert run(base)[0] == 0
    before = snapshot(tmp_path)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    rc, _, err = run(base + ["--rings", "3"], preexec_fn=limit)
    assert rc == 2
    line = one_error_line(err, "File too large")
    assert str(tmp_path) in line
    assert snapshot(tmp_path).items() >= {k: v for k, v in before.items()
                                         if not k.startswith("f.csv.parts")}.items()


# -- item 9: values never silently accepted ------------------------------------------------------

def _nrrd(tmp_path, directions=None):
    img = sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 20, (60, 60)).astype(
        np.float32))
    img.SetSpacing((0.1, 0.1))
    p = tmp_path / "img.nrrd"
    sitk.WriteImage(img, str(p), False)
    mask = np.zeros((60, 60), np.uint8)
    mask[20:40, 20:40] = 1
    mk = sitk.GetImageFromArray(mask)
    mk.CopyInformation(img)
    sitk.WriteImage(mk, str(tmp_path / "mask.nrrd"))
    if directions:
        raw = p.read_bytes()
        head, body = raw.split(b"\n\n", 1)
        lines = [ln if not ln.startswith(b"space directions:") else b"space directions: "
                 + directions for ln in head.split(b"\n")]
        p.write_bytes(b"\n".join(lines) + b"\n\n" + body)
    return p, tmp_path / "mask.nrrd"


@pytest.mark.parametrize("directions", [b"(nan,0) (0,0.1)", b"(0,0) (0,0.1)",
                                        b"none (0,0.1)", b"(-0.1,0) (0,inf)"])
def test_unusable_header_spacing_is_refused_not_read_as_1_mm(directions, tmp_path):
    p, mk = _nrrd(tmp_path, directions)
    rc, out, err = run(["extract", "--image", p, "--mask", mk, "--out", tmp_path / "f.csv",
                        "--no-progress"])
    assert rc == 2
    one_error_line(err, p, "spacing")
    # where the file itself is readable (a missing direction), the user can give the spacing
    rc, _, err = run(["extract", "--image", p, "--mask", mk, "--spacing-mm", "0.1", "0.1",
                      "--out", tmp_path / "f.csv", "--no-progress"])
    if directions.startswith(b"none"):
        assert rc == 0, err
    else:
        assert rc == 2
        one_error_line(err, p)


def test_images_over_the_pixel_cap_are_refused_before_decoding(tmp_path):
    from PIL import Image
    bomb = tmp_path / "bomb.png"
    # 40,000 x 40,000 one-bit pixels: a few kB on disk, 1.6 G pixels once decoded
    Image.new("1", (40000, 40000)).save(bomb, optimize=True)
    assert bomb.stat().st_size < 1_000_000
    rc, _, err = run(["segment", "--image", bomb, "--out", tmp_path / "m.nrrd"])
    assert rc == 2
    one_error_line(err, bomb, "pixel limit")
    p, mk = _nrrd(tmp_path)
    rc, _, err = run(["extract", "--image", p, "--mask", mk, "--out", tmp_path / "f.csv",
                      "--no-progress"], env={"HER2RADIOMICS_MAX_PIXELS": "1000"})
    assert rc == 2
    one_error_line(err, "larger than the 1,000-pixel limit")


def test_formula_cells_are_quoted_numbers_are_not():
    from HER2RadiomicsLib.outputs import spreadsheet_safe
    assert [spreadsheet_safe(v) for v in ("=1+2", "+cmd", "-cmd|' /C calc'!A0", "@SUM(A1)",
                                          "-0.25", "+3", "1e-3", "plain", -1.5, None)] == [
        "'=1+2", "'+cmd", "'-cmd|' /C calc'!A0", "'@SUM(A1)", "-0.25", "+3", "1e-3", "plain",
        -1.5, None]


def test_reader_study_case_ids_never_become_paths(cohort, tmp_path):
    rows = list(csv.DictReader(open(cohort / "readers.csv")))
    for r in rows:
        for c in ("image", "mask"):
            r[c] = str(cohort / r[c])
    first = rows[0]["case_id"]
    for r in rows:
        if r["case_id"] == first:
            r["case_id"] = "../../escaped"
    man = write_manifest(tmp_path / "rs.csv", rows)
    out = tmp_path / "a" / "b" / "rs"
    rc, text, err = run(["reader-study", "--manifest", man, "--params", "cui2023",
                         "--out", out, "--no-progress"])
    assert rc == 1, err                                   # done, with the rows it refused
    assert "must not contain path separators: row ignored" in text
    assert not list(tmp_path.rglob("escaped*"))


def test_icc_forms_offered_are_the_ones_computed():
    from HER2RadiomicsLib.readers.commands import ICC_FORMS
    from HER2RadiomicsLib.readers.reproducibility import FORMS
    assert ICC_FORMS == FORMS
    rc, _, err = run(["icc", "--table", "t.csv", "--out", "o.csv", "--icc-form", "ICC9"])
    assert rc == 2
    one_error_line(err, "invalid choice: 'ICC9'")


def test_a_bundles_params_name_never_becomes_a_path(tmp_path):
    """The params file a prediction writes stays in its private folder, whatever the bundle's
    params_name says (a crafted '../../x' or the absolute path of the training params), and
    the folder is gone when the extraction is done."""
    from HER2RadiomicsLib.modelling.predict import bundle_params_file, params_file_name

    class B:
        meta = {"params_yaml": "imageType: {Original: {}}\n"}
    assert params_file_name("cui2023") == "cui2023.yaml"
    assert params_file_name("/home/r/my params.yaml") == "my_params.yaml"
    for name in ("../../../" + str(tmp_path / "escaped"), str(tmp_path / "abs.yaml"), "..", ""):
        B.meta["params_name"] = name
        with bundle_params_file(B) as p:
            assert p.read_text() == B.meta["params_yaml"]
            assert tmp_path not in p.parents and p.parent.name.startswith("h2r_bundle_")
        assert not p.parent.exists()
    assert list(tmp_path.iterdir()) == []


# -- a marker, a journal or a lock file is a file anyone can edit ---------------------------------

def test_planted_journals_and_markers_never_reach_outside_the_folder(case, tmp_path):
    import json
    img, m = case
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("x")
    keep = tmp_path / "keep.txt"
    keep.write_text("x")
    # a folder holding only a journal is not empty, and its journal is never run
    out = tmp_path / "out"
    out.mkdir()
    (out / ".her2radiomics-swap.json").write_text(json.dumps(
        {"stage": "../victim", "command": "rings", "files": [], "remove": ["../keep.txt"],
         "kept": []}))
    rc, _, err = run(["rings", "--image", img, "--mask", m, "--rings", "3", "--out-dir", out])
    assert rc == 2
    one_error_line(err, out)
    assert (victim / "important.txt").exists() and keep.exists()
    # a folder of ours whose journal or marker was edited to name files outside it
    ours = tmp_path / "ours"
    assert run(["rings", "--image", img, "--mask", m, "--rings", "3", "--out-dir", ours])[0] == 0
    mark = json.loads((ours / ".her2radiomics-output.json").read_text())
    mark["files"] += ["../keep.txt", str(keep), "../victim/important.txt"]
    (ours / ".her2radiomics-output.json").write_text(json.dumps(mark))
    assert run(["rings", "--image", img, "--mask", m, "--rings", "5", "--out-dir", ours])[0] == 0
    assert keep.exists() and (victim / "important.txt").exists()
    (ours / ".her2radiomics-swap.json").write_text(json.dumps(
        {"stage": str(victim), "command": "rings", "files": [], "remove": [str(keep)],
         "kept": []}))
    rc, _, err = run(["rings", "--image", img, "--mask", m, "--rings", "3", "--out-dir", ours])
    assert rc == 2
    one_error_line(err, "not a swap journal of this folder")
    assert keep.exists() and (victim / "important.txt").exists()


def test_an_empty_file_named_like_our_lock_is_left_alone(case, tmp_path):
    img, m = case
    mine = tmp_path / "f.csv.lock"
    mine.write_text("")
    rc, _, err = run(["extract", "--image", img, "--mask", m, "--params", "cui2023",
                      "--out", tmp_path / "f.csv", "--no-progress"])
    assert rc == 2
    one_error_line(err, "not a her2radiomics lock")
    assert mine.exists() and mine.read_text() == ""


def test_outputs_over_files_an_image_depends_on_are_refused(case, tmp_path, small_manifest):
    """A spacing sidecar, a MetaImage's pixel file and the masks eval-segmenter reads are
    inputs too, though the command line does not name them."""
    import json
    img, m = case
    png = tmp_path / "us.png"
    sitk.WriteImage(sitk.Cast(sitk.RescaleIntensity(sitk.ReadImage(str(img))[:, :, 0]
                                                    if sitk.ReadImage(str(img)).GetDimension()
                                                    == 3 else sitk.ReadImage(str(img))),
                              sitk.sitkUInt8), str(png))
    side = tmp_path / "us.png.json"
    side.write_text(json.dumps({"spacing_mm": [0.1, 0.1]}))
    mhd = tmp_path / "img.mhd"
    sitk.WriteImage(sitk.ReadImage(str(png)), str(mhd))
    raw = tmp_path / "img.raw"
    assert raw.exists()
    man, rows = small_manifest
    pred = tmp_path / "pred"
    pred.mkdir()
    victim_mask = pred / f"{rows[0]['case_id']}.nrrd"
    sitk.WriteImage(sitk.ReadImage(rows[0]["mask"]), str(victim_mask))
    before = snapshot(tmp_path)
    for args, victim in (
            (["extract", "--image", png, "--mask", m, "--out", side], side),
            (["extract", "--image", mhd, "--mask", m, "--out", raw], raw),
            (["eval-segmenter", "--manifest", man, "--pred-dir", pred, "--out", victim_mask],
             victim_mask)):
        rc, _, err = run(args)
        assert rc == 2, (args, err)
        one_error_line(err, victim, "also an input")
    assert snapshot(tmp_path) == before


def test_resume_sees_a_changed_metaimage_pixel_file(tmp_path, case):
    img, m = case
    base = sitk.ReadImage(str(img))
    base = base[:, :, 0] if base.GetDimension() == 3 else base
    mhd = tmp_path / "img.mhd"
    sitk.WriteImage(base, str(mhd))
    mk = sitk.ReadImage(str(m))
    mk.CopyInformation(base)
    sitk.WriteImage(mk, str(tmp_path / "mask.nrrd"))
    write_manifest(tmp_path / "m.csv", [{"case_id": "A", "image": "img.mhd",
                                         "mask": "mask.nrrd"}])
    out = tmp_path / "f.csv"
    args = ["extract", "--manifest", tmp_path / "m.csv", "--params", "cui2023", "--out", out,
            "--no-progress", "--pixel-units"]
    assert run(args)[0] == 0
    first = pd.read_csv(out).loc[0, "tumor__original_firstorder_Mean"]
    arr = sitk.GetArrayFromImage(base)
    inv = sitk.GetImageFromArray((arr.max() - arr).astype(arr.dtype))
    inv.CopyInformation(base)
    sitk.WriteImage(inv, str(tmp_path / "tmp.mhd"))
    (tmp_path / "tmp.raw").replace(tmp_path / "img.raw")      # only the pixel file changes
    rc, text, err = run(args + ["--resume"])
    assert rc == 0, err
    assert "resumed" not in text
    assert pd.read_csv(out).loc[0, "tumor__original_firstorder_Mean"] != first


def test_headers_that_state_no_spacing_are_not_millimetres(tmp_path):
    p, mk = _nrrd(tmp_path)
    head, body = p.read_bytes().split(b"\n\n", 1)
    lines = [ln for ln in head.split(b"\n") if not ln.startswith(b"space")]
    nodir = tmp_path / "nodir.nrrd"
    nodir.write_bytes(b"\n".join(lines) + b"\n\n" + body)
    padded = tmp_path / "padded.nrrd"             # the nan past 64 KiB of comments
    pad = b"\n".join([b"# " + b"x" * 70] * 1000)
    nan_lines = [ln for ln in lines if not ln.startswith(b"kinds")] + [b"spacings: nan nan"]
    padded.write_bytes(nan_lines[0] + b"\n" + pad + b"\n" + b"\n".join(nan_lines[1:]) + b"\n\n"
                       + body)
    rc, _, err = run(["extract", "--image", nodir, "--mask", mk, "--rings", "3",
                      "--out", tmp_path / "f.csv", "--no-progress"])
    assert rc == 2
    one_error_line(err, nodir, "spacing is unknown")
    rc, _, err = run(["extract", "--image", padded, "--mask", mk, "--out", tmp_path / "g.csv",
                      "--no-progress"])
    assert rc == 2
    one_error_line(err, padded, "spacing")


def test_an_absurd_ultrasound_calibration_is_not_a_spacing(tmp_path, cohort):
    import pydicom
    ds = pydicom.dcmread(str(cohort / "images" / "P0001-1.dcm"))
    ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX = float("inf")
    bad = tmp_path / "inf.dcm"
    ds.save_as(str(bad), enforce_file_format=True)
    rc, _, err = run(["extract", "--image", bad, "--mask", cohort / "masks" / "P0001-1.png",
                      "--rings", "3", "--out", tmp_path / "f.csv", "--no-progress"])
    assert rc == 2
    one_error_line(err, bad, "spacing is unknown")


def test_rings_rerun_leaves_no_stale_ring_and_keeps_a_persons_file(case, tmp_path):
    img, m = case
    out = tmp_path / "rings"
    assert run(["rings", "--image", img, "--mask", m, "--rings", "3,5,8", "--out-dir", out])[0] == 0
    assert (out / "peri_5-8mm.nrrd").exists()
    (out / "notes.txt").write_text("mine")
    assert run(["rings", "--image", img, "--mask", m, "--rings", "3", "--out-dir", out])[0] == 0
    assert not (out / "peri_5-8mm.nrrd").exists() and (out / "peri_0-3mm.nrrd").exists()
    assert (out / "notes.txt").read_text() == "mine"
    rc, _, err = run(["rings", "--image", img, "--mask", m, "--rings", "3", "--fov",
                      out / "fov.nrrd", "--out-dir", out])
    assert rc == 2
    one_error_line(err, "also an input")


def test_a_refused_manifest_row_keeps_the_previous_table(small_manifest, tmp_path):
    man, rows = small_manifest
    out = tmp_path / "f.csv"
    args = ["extract", "--manifest", man, "--params", "cui2023", "--out", out, "--no-progress"]
    assert run(args + ["--aggregate", "mean"])[0] == 0
    table = out.read_bytes()
    rows[1]["mask"] = str(tmp_path / "gone.png")               # a mask file went missing
    write_manifest(man, rows)
    rc, text, _ = run(args)
    assert rc == 1 and "kept the previous f.csv" in text
    assert out.read_bytes() == table
    write_manifest(man, rows[:1] + rows[2:])                      # the case leaves the manifest
    assert run(args)[0] == 0
    assert not (tmp_path / "f_patients.csv").exists()          # an old --aggregate table goes


def test_sigterm_cleans_staging_and_lock(tiny_training, tmp_path):
    import signal
    import time
    d = tiny_training
    out = tmp_path / "model"
    proc = subprocess.Popen(CLI + ["train", "--recipe", str(d / "tiny.yaml"), "--features",
                                   str(d / "features.csv"), "--labels", str(d / "labels.csv"),
                                   "--no-external", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not list(out.glob(".staging-*")) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert not list(out.glob(".staging-*")) if out.exists() else True
    assert not (tmp_path / "model.lock").exists()
    assert not out.exists() or [p.name for p in out.iterdir()] == []


def test_station_create_never_writes_into_a_folder_it_did_not_make(small_manifest, tmp_path):
    man, _ = small_manifest
    folder = tmp_path / "data"
    (folder / "queues").mkdir(parents=True)
    (folder / "queues" / "R1.json").write_text("notes")
    rc, _, err = run(["station", "create", "--study", folder, "--manifest", man, "--readers",
                      "R1,R2", "--start", "empty"])
    assert rc == 2
    one_error_line(err, folder, "not empty")
    assert (folder / "queues" / "R1.json").read_text() == "notes"
    rc, _, err = run(["station", "create", "--study", tmp_path / "s", "--manifest", man,
                      "--readers", "R1,coordinator", "--start", "empty"])
    assert rc == 2
    one_error_line(err, "'coordinator' is reserved")


def test_case_ids_that_would_collide_or_fail_as_file_names(small_manifest, tmp_path):
    man, rows = small_manifest
    r = rows[0]
    extra = [dict(r, case_id="Caf\u00e9"), dict(r, case_id="Cafe\u0301"),        # NFC / NFD
             dict(r, case_id="Lesion"), dict(r, case_id="lesion"),             # letter case
             dict(r, case_id="A:B")]                                           # Windows
    with open(man, "w", newline="") as fh:      # a blank line: rows keep the file's numbers
        w = csv.DictWriter(fh, fieldnames=list(r))
        w.writeheader()
        fh.write("\n")
        w.writerows(extra)
    rc, text, _ = run(["extract", "--manifest", man, "--params", "cui2023",
                       "--out", tmp_path / "f.csv", "--no-progress"])
    assert rc == 1
    errs = pd.read_csv(tmp_path / "f_errors.csv")
    assert sorted(errs.case_id) == ["A:B", "Cafe\u0301", "lesion"]
    assert any("row 4" in e and "Unicode form" in e for e in errs.error)   # line 4 of the file
    assert any("Windows" in e for e in errs.error)


def test_icc_names_its_table_and_drops_infinite_ratings(tmp_path):
    t = tmp_path / "t.csv"
    t.write_text("case_id,reader,f,g\nA,R1,1,inf\nA,R2,2,1\nB,R1,3,2\nB,R2,4,2\nC,R1,5,3\n"
                 "C,R2,5,3\n")
    rc, out, err = run(["icc", "--table", t, "--out", tmp_path / "icc.csv"])
    assert rc == 0 and "RuntimeWarning" not in err and "listwise deletion" in err, err
    icc = pd.read_csv(tmp_path / "icc.csv").set_index("feature")
    assert icc.loc["g", "n_cases"] == 2 and icc.loc["f", "n_cases"] == 3
    rc, _, err = run(["icc", "--table", t, "--case-col", "nope", "--out", tmp_path / "x.csv"])
    assert rc == 2
    one_error_line(err, t, "column 'nope'")
