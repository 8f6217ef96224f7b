"""Results are never destroyed, two runs never race, bad input is refused before any work
with one line per problem, and the commands fit together from any working directory."""
import csv
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from HER2RadiomicsLib.cli import main


def _rows(cohort, n=4):
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))[:n]
    for r in rows:
        for c in ("image", "mask"):
            r[c] = str(cohort / r[c])
    return rows


def _write_manifest(path, rows, fields=None):
    fields = fields or list(rows[0])
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def _err_lines(capsys):
    return [ln for ln in capsys.readouterr().err.strip().splitlines() if ln]


# -- outputs are replaced only by complete, successful results ---------------------------------

def test_failing_rerun_keeps_good_single_case_result(cohort, tmp_path, capsys):
    img, m = cohort / "images" / "P0001-1.dcm", cohort / "masks" / "P0001-1.png"
    out = tmp_path / "keep.csv"
    assert main(["extract", "--image", str(img), "--mask", str(m), "--params", "cui2023",
                 "--out", str(out), "--no-progress"]) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.glob("keep*.csv")}
    assert len(before) == 3 and len(pd.read_csv(out)) == 1
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"not an image at all")
    capsys.readouterr()
    assert main(["extract", "--image", str(img), "--mask", str(bad), "--params", "cui2023",
                 "--out", str(out), "--no-progress"]) == 2
    after = {p.name: p.read_bytes() for p in tmp_path.glob("keep*.csv")}
    assert after == before                       # table, provenance, errors: untouched
    got = capsys.readouterr()
    err = got.err.strip().splitlines()           # one line on stderr, naming the file
    assert got.out == "" and len(err) == 1 and err[0].startswith(f"error: {bad}: "), got


def test_interrupted_rerun_without_resume_keeps_table_and_parts(cohort, tmp_path,
                                                                  monkeypatch, capsys):
    import HER2RadiomicsLib.extraction.batch as batch
    from HER2RadiomicsLib.extraction.batch import ExtractConfig, read_manifest, run_batch
    man = _write_manifest(tmp_path / "m.csv", _rows(cohort, 6))
    rows = read_manifest(man)
    out = tmp_path / "f.csv"
    cfg = ExtractConfig(params="cui2023")
    assert run_batch(rows, out, cfg, progress=False).n_ok == 6
    table = out.read_bytes()
    prov = (tmp_path / "f_provenance.csv").read_bytes()
    parts = sorted(p.name for p in (tmp_path / "f.csv.parts").glob("*.json"))
    from conftest import interrupt_at_call
    real = interrupt_at_call(monkeypatch, 3)
    res = run_batch(read_manifest(man), out, cfg, progress=False)     # no --resume
    assert res.interrupted and res.kept_previous
    assert out.read_bytes() == table and (tmp_path / "f_provenance.csv").read_bytes() == prov
    assert sorted(p.name for p in (tmp_path / "f.csv.parts").glob("*.json")) == parts
    # a complete rerun replaces the table (same values)
    monkeypatch.setattr(batch, "_safe_case", real)
    res = run_batch(read_manifest(man), out, cfg, resume=True, progress=False)
    assert res.n_ok == 6 and not res.kept_previous
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(pd.io.common.BytesIO(table)))


def test_rerun_that_loses_a_case_keeps_previous_but_one_that_adds_replaces(cohort, tmp_path,
                                                                           capsys):
    rows = _rows(cohort, 3)
    man = _write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "f.csv"
    args = ["extract", "--manifest", str(man), "--params", "cui2023", "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    table = out.read_bytes()
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"garbage")
    rows[1]["mask"] = str(bad)
    _write_manifest(man, rows)
    capsys.readouterr()
    assert main(args) == 1
    assert out.read_bytes() == table
    text = capsys.readouterr().out
    assert "kept the previous f.csv" in text and rows[1]["case_id"] in text
    # a new case that fails beside all the old ones working: the table is replaced
    rows[1]["mask"] = str(cohort / "masks" / (rows[1]["case_id"] + ".png"))
    rows.append(dict(rows[0], case_id="NEW-bad", mask=str(bad)))
    _write_manifest(man, rows)
    assert main(args) == 1
    f = pd.read_csv(out)
    assert len(f) == 3 and pd.read_csv(tmp_path / "f_errors.csv").case_id.tolist() == ["NEW-bad"]


def test_second_run_on_same_output_is_refused_and_told_who(cohort, tmp_path, capsys):
    out = tmp_path / "f.csv"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from HER2RadiomicsLib.outputs import output_lock
        with output_lock({str(out)!r}):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        img, m = cohort / "images" / "P0001-1.dcm", cohort / "masks" / "P0001-1.png"
        rc = main(["extract", "--image", str(img), "--mask", str(m), "--params", "cui2023",
                   "--out", str(out), "--no-progress"])
        err = _err_lines(capsys)
        assert rc == 2 and len(err) == 1
        assert "another run is writing it" in err[0] and f"pid {holder.pid}" in err[0]
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # a killed holder leaves no live lock: the next run proceeds
    assert main(["extract", "--image", str(img), "--mask", str(m), "--params", "cui2023",
                 "--out", str(out), "--no-progress"]) == 0
    assert not (tmp_path / "f.csv.lock").exists()


def test_staged_dir_keeps_old_folder_on_failure(tmp_path):
    from HER2RadiomicsLib.outputs import staged_dir
    out = tmp_path / "model"
    with staged_dir(out, "train") as st:
        (st / "metrics.json").write_text("good")
    (out / "my-notes.txt").write_text("mine")            # a person's file in the folder
    with pytest.raises(RuntimeError):
        with staged_dir(out) as st:
            (st / "metrics.json").write_text("half")
            raise RuntimeError("boom")
    assert (out / "metrics.json").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]       # no staging left behind
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "metrics.json", "my-notes.txt"]
    with staged_dir(out) as st:
        (st / "metrics.json").write_text("new")
        (st / "plots").mkdir()
        (st / "plots" / "roc.png").write_text("png")
    assert (out / "metrics.json").read_text() == "new"
    assert (out / "my-notes.txt").read_text() == "mine"          # never ours to replace
    with staged_dir(out) as st:                                   # a run without plots
        (st / "metrics.json").write_text("newer")
    assert not (out / "plots").exists()                           # the stale plot went
    assert (out / "my-notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_staged_dir_never_empties_a_folder_it_did_not_make(tmp_path):
    from HER2RadiomicsLib.errors import InputError
    from HER2RadiomicsLib.outputs import staged_dir
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "features.csv").write_text("case_id\n")
    (data / "sub" / "x.png").write_text("img")
    with pytest.raises(InputError, match="not empty and was not made"):
        with staged_dir(data, "train") as st:
            (st / "metrics.json").write_text("x")
    assert sorted(str(p.relative_to(data)) for p in data.rglob("*")) == [
        "features.csv", "sub", "sub/x.png"]


def test_a_swap_cut_short_by_a_crash_is_finished_by_the_next_run(tmp_path):
    """kill -9 between the renames of a set: the journal lets the next run complete it, so
    the folder never stays a mix of two runs."""
    import json
    from HER2RadiomicsLib.outputs import JOURNAL, claim_folder, read_marker, staged_dir
    out = tmp_path / "rs"
    with staged_dir(out, "reader-study") as st:
        for n in ("icc.csv", "summary.json"):
            (st / n).write_text("old")
    # a crashed swap: staging folder and journal written, only the first file moved
    st = out / ".staging-999999"
    st.mkdir()
    (st / "summary.json").write_text("new")
    (out / "icc.csv").write_text("new")
    (out / JOURNAL).write_text(json.dumps({"stage": st.name, "command": "reader-study",
                                           "files": ["icc.csv", "summary.json"],
                                           "remove": [], "kept": []}))
    claim_folder(out, "reader-study")                 # what the next run does first
    assert (out / "icc.csv").read_text() == (out / "summary.json").read_text() == "new"
    assert not (out / JOURNAL).exists() and not st.exists()
    assert read_marker(out)["files"] == ["icc.csv", "summary.json"]


# -- manifests and option values are checked before any work ----------------------------------

def test_manifest_problems_are_row_errors_and_the_other_cases_run(cohort, tmp_path, capsys):
    rows = _rows(cohort, 6)
    fields = list(rows[0]) + ["label", "spacing_x_mm", "spacing_y_mm", "frame"]
    rows[0].update(label="benign")
    rows[1].update(spacing_x_mm="0.1")
    rows[2].update(spacing_x_mm="abc", spacing_y_mm="0.1", frame="x")
    rows[3].update(mask=str(tmp_path / "nope.png"))
    rows.append(dict(rows[4], label="", case_id=rows[5]["case_id"]))      # a duplicate id
    rows.append(dict(rows[4], case_id="=HYPERLINK(\"http://x\")"))       # a formula
    rows.append(dict(rows[4], case_id="L" * 300))                         # too long a name
    man = _write_manifest(tmp_path / "m.csv", rows, fields)
    out = tmp_path / "f.csv"
    rc = main(["extract", "--manifest", str(man), "--params", "cui2023", "--out", str(out),
               "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1
    for expect in ("label 'benign'", "belong in another column",
                   "spacing_x_mm and spacing_y_mm must be given together",
                   "spacing_x_mm 'abc' is not a positive number", "frame 'x'",
                   "mask file not found", "duplicate case_id", "run as a formula",
                   "longer than 200"):
        assert expect in text, expect
    # the two good cases are extracted; every bad row is in the error table, by its row
    assert pd.read_csv(out).case_id.tolist() == [rows[4]["case_id"], rows[5]["case_id"]]
    errs = pd.read_csv(tmp_path / "f_errors.csv")
    assert len(errs) == 7 and all(e.startswith(f"{man}: row ") for e in errs.error)
    assert not any(str(c).startswith("=") for c in errs.case_id)   # quoted for spreadsheets


@pytest.mark.parametrize("args,expect", [
    (["--jobs", "0"], "--jobs 0: must be at least 1"),
    (["--min-mask-pixels", "-1"], "--min-mask-pixels -1"),
    (["--max-clip-fraction", "-0.1"], "--max-clip-fraction -0.1"),
    (["--rings", "3,3,5"], "given twice"),
    (["--spacing-mm", "0", "0.1"], "--spacing-mm 0 0.1"),
    (["--frame", "-2"], "--frame -2"),
])
def test_bad_option_values_refused_up_front(args, expect, cohort, tmp_path, capsys):
    img, m = cohort / "images" / "P0001-1.dcm", cohort / "masks" / "P0001-1.png"
    rc = main(["extract", "--image", str(img), "--mask", str(m), "--params", "cui2023",
               "--out", str(tmp_path / "f.csv"), "--no-progress", *args])
    err = _err_lines(capsys)
    assert rc == 2 and len(err) == 1 and expect in err[0], err
    assert not list(tmp_path.iterdir())                     # nothing written, nothing locked


def test_bad_outputs_and_params_refused_up_front(cohort, tmp_path, capsys):
    img, m = cohort / "images" / "P0001-1.dcm", cohort / "masks" / "P0001-1.png"
    base = ["extract", "--image", str(img), "--mask", str(m), "--no-progress"]
    d = tmp_path / "adir"
    d.mkdir()
    cases = [
        (["--params", "cui2023", "--out", str(d)], "is a folder"),
        (["--params", "cui2023", "--out", "/dev/null/f.csv"], "is a file, not a folder"),
    ]
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    cases.append((["--params", str(empty), "--out", str(tmp_path / "f.csv")],
                  "the params file is empty"))
    for extra, expect in cases:
        rc = main(base + extra)
        err = _err_lines(capsys)
        assert rc == 2 and len(err) == 1 and expect in err[0], err
        assert "unexpected" not in err[0]


def test_absurd_spacing_for_rings_is_refused_with_memory_estimate(cohort, tmp_path, capsys):
    img, m = cohort / "images" / "P0001-1.dcm", cohort / "masks" / "P0001-1.png"
    rc = main(["extract", "--image", str(img), "--mask", str(m), "--params", "cui2023",
               "--rings", "3,5,8", "--spacing-mm", "1e-6", "1e-6",
               "--out", str(tmp_path / "f.csv"), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 2 and out.out == "" and len(out.err.strip().splitlines()) == 1
    assert "working grid" in out.err and "check the pixel spacing" in out.err


def _case(tmp_path, arr, mask):
    img = sitk.GetImageFromArray(arr.astype(np.float32))
    img.SetSpacing((0.1, 0.1))
    ip, mp = tmp_path / "i.nrrd", tmp_path / "m.nrrd"
    sitk.WriteImage(img, str(ip))
    mk = sitk.GetImageFromArray(mask.astype(np.uint8))
    mk.CopyInformation(img)
    sitk.WriteImage(mk, str(mp))
    return ip, mp


@pytest.mark.parametrize("what", ["nan", "binwidth", "whole"])
def test_bad_pixels_bins_and_masks_say_what_is_wrong(what, tmp_path, capsys):
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 20, (80, 80))
    mask = np.zeros((80, 80), bool)
    mask[20:50, 20:50] = True
    params = "cui2023"
    if what == "nan":
        arr[30, 30] = np.nan
        expect = "NaN/Inf pixel"
    elif what == "binwidth":
        p = tmp_path / "fine.yaml"
        p.write_text("setting: {binWidth: 0.00001}\nimageType: {Original: {}}\n"
                     "featureClass: {glcm: }\n")
        params = str(p)
        expect = "grey levels"
    else:
        mask[:] = True
        expect = "covers 100% of the image"
    ip, mp = _case(tmp_path, arr, mask)
    rc = main(["extract", "--image", str(ip), "--mask", str(mp), "--params", params,
               "--out", str(tmp_path / "f.csv"), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 2
    assert expect in out.out + out.err
    assert "MemoryError" not in out.out + out.err and "Maximum allowed" not in out.out


# -- the documented steps fit together ----------------------------------------------------------

def test_eval_segmenter_counts_images_without_lesion_as_misses(cohort, tmp_path):
    import json
    rows = _rows(cohort, 2)
    man = _write_manifest(tmp_path / "m.csv", rows)
    pred = tmp_path / "pred"
    pred.mkdir()
    ref = sitk.ReadImage(rows[0]["mask"])
    sitk.WriteImage(ref, str(pred / f"{rows[0]['case_id']}.nrrd"))     # perfect; second: none
    assert main(["eval-segmenter", "--manifest", str(man), "--pred-dir", str(pred),
                 "--out", str(tmp_path / "e.csv"), "--no-progress"]) == 0
    s = json.loads((tmp_path / "e.summary.json").read_text())
    assert s["n"] == 2 and s["n_no_lesion_found"] == 1
    assert s["mean_dice"] == pytest.approx(0.5) and s["miss_rate_dice_lt_0_1"] == 0.5


def test_segment_manifest_feeds_extract_from_another_folder(cohort, tmp_path, monkeypatch):
    from HER2RadiomicsLib.segmentation import inference
    from HER2RadiomicsLib.segmentation.inference import Segmenter
    from test_segmentation import DarknessNet
    monkeypatch.setattr(inference, "get_segmenter",
                        lambda *a, **k: Segmenter(DarknessNet(), size=96))
    work = tmp_path / "work"
    work.mkdir()
    rows = [{k: os.path.relpath(v, work) if k in ("image", "mask") else v
             for k, v in r.items()} for r in _rows(cohort, 2)]
    _write_manifest(work / "all.csv", rows)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["segment", "--manifest", "../work/all.csv", "--out-dir", "cnn",
                 "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path)                 # read from yet another folder
    assert main(["extract", "--manifest", "elsewhere/cnn/manifest.csv", "--params", "cui2023",
                 "--out", "f.csv", "--no-progress"]) == 0
    assert len(pd.read_csv(tmp_path / "f.csv")) == 2


def test_predict_manifest_with_no_success_keeps_previous_table(cohort, tmp_path, capsys):
    from test_bundle_allowlist import _frame, _meta, _pipeline
    from HER2RadiomicsLib.modelling.bundle import save_bundle
    X, y = _frame()
    b = save_bundle(tmp_path / "b.zip", {"pipeline": _pipeline(X, y), "nomogram": None},
                    _meta(X))
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"garbage")
    rows = _rows(cohort, 1)
    rows[0]["mask"] = str(bad)
    man = _write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "preds.csv"
    out.write_text("case_id,predicted_class\nold,low\n")
    rc = main(["predict", "--bundle", str(b), "--manifest", str(man), "--out", str(out)])
    assert rc == 1
    assert out.read_text() == "case_id,predicted_class\nold,low\n"
    assert "was not written" in capsys.readouterr().out


def test_command_line_start_up_imports_only_what_the_command_needs(cohort, tmp_path):
    """Start-up time is set by imports: --help must not load pandas/scipy/torch, and a
    one-case extract without rings must not load pandas, scikit-image or scikit-learn."""
    img, m = cohort / "images" / "P0001-1.dcm", cohort / "masks" / "P0001-1.png"
    code = textwrap.dedent(f"""
        import sys
        from HER2RadiomicsLib.cli import build_parser, main
        build_parser()
        after_parser = set(sys.modules)
        rc = main(["extract", "--image", {str(img)!r}, "--mask", {str(m)!r}, "--params",
                   "cui2023", "--out", {str(tmp_path / "f.csv")!r}])
        heavy = lambda mods: sorted(x for x in ("pandas", "scipy", "torch", "skimage", "tqdm",
                                                "sklearn", "matplotlib") if x in mods)
        print(sorted(m for m in sys.modules if m.startswith("skimage.")
                     and m.count(".") == 1 and not m.startswith("skimage._")))
        print(rc, heavy(after_parser), heavy(set(sys.modules)))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rc, parser_mods, extract_mods = r.stdout.strip().splitlines()[-1].split(" ", 2)
    assert rc == "0", r.stderr
    assert parser_mods == "[]", parser_mods
    # the engine needs scipy, pydicom imports tqdm, and GLSZM zones come from scikit-image's
    # label (its lazy loader loads that one function: 5 ms); nothing else heavy, and no other
    # part of scikit-image (filters, transforms, features cost ~0.2 s)
    assert set(eval(extract_mods)) <= {"scipy", "tqdm", "skimage"}, extract_mods
    skimage_parts = eval(r.stdout.strip().splitlines()[-2])
    assert set(skimage_parts) <= {"skimage.measure", "skimage.util"}, skimage_parts
