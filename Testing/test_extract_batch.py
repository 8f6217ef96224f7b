"""Batch extraction and the CLI: errors don't stop a cohort, resume, atomic outputs, Dask."""
import csv
import subprocess
import sys

import pandas as pd
import pytest

from HER2RadiomicsLib.extraction.batch import BatchOptions, ExtractConfig, read_manifest, run_batch
from HER2RadiomicsLib.cli import main
from HER2RadiomicsLib.errors import InputError


@pytest.fixture
def manifest(cohort, tmp_path):
    """The cohort manifest plus one broken case (unreadable mask file) and one empty-mask case.

    (A missing file is refused for the whole manifest before any work: see test_outputs_atomic.)
    """
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))[:4]
    for r in rows:
        for c in ("image", "mask"):
            r[c] = str(cohort / r[c])
    import numpy as np
    import SimpleITK as sitk
    empty = tmp_path / "empty.png"
    ref = sitk.ReadImage(rows[0]["mask"])
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(ref.GetSize()[::-1], np.uint8)), str(empty))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG but not really")
    bad = dict(rows[0], case_id="BAD-missing", mask=str(corrupt))
    bad2 = dict(rows[1], case_id="BAD-empty", mask=str(empty))
    rows = rows[:2] + [bad] + rows[2:] + [bad2]
    p = tmp_path / "m.csv"
    with open(p, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return p


def test_bad_cases_listed_others_processed(manifest, tmp_path, capsys):
    out = tmp_path / "f.csv"
    rc = main(["extract", "--manifest", str(manifest), "--params", "cui2023", "--rings", "3",
               "--out", str(out), "--no-progress"])
    assert rc == 1
    text = capsys.readouterr().out
    assert "BAD-missing" in text and "BAD-empty" in text
    f = pd.read_csv(out)
    assert f.columns[0] == "case_id" and len(f) == 4
    assert "tumor__original_glszm_ZoneEntropy" in f.columns
    assert "peri_0-3mm__original_glszm_ZoneEntropy" in f.columns
    err = pd.read_csv(tmp_path / "f_errors.csv")
    assert set(err.case_id) == {"BAD-missing", "BAD-empty"}
    assert err.set_index("case_id").loc["BAD-empty", "error"].endswith("mask is empty "
                                                                      "(no non-zero pixel)")
    prov = pd.read_csv(tmp_path / "f_provenance.csv")
    assert set(prov.spacing_source) == {"dicom-us-region"}
    assert not list(tmp_path.glob(".*"))        # no temporary files left behind


def test_resume_skips_done_cases(manifest, tmp_path):
    rows = read_manifest(manifest)
    cfg = ExtractConfig(params="cui2023")
    out = tmp_path / "f.csv"
    r1 = run_batch(rows, out, cfg, progress=False)
    assert r1.n_ok == 4 and len(r1.errors) == 2
    first = pd.read_csv(out)
    r2 = run_batch(rows, out, cfg, resume=True, progress=False)
    assert r2.n_skipped == 4 and r2.n_ok == 4      # failed cases are retried, done ones kept
    pd.testing.assert_frame_equal(first, pd.read_csv(out))
    # a changed setting invalidates the parts
    r3 = run_batch(rows, out, ExtractConfig(params="cui2023", rings_mm=(3.0,)), resume=True,
                   progress=False)
    assert r3.n_skipped == 0


def test_interrupt_keeps_finished_parts(manifest, tmp_path, monkeypatch):
    import HER2RadiomicsLib.extraction.batch as batch
    from conftest import interrupt_at_call
    rows = read_manifest(manifest)
    real = interrupt_at_call(monkeypatch, 3)
    out = tmp_path / "f.csv"
    res = run_batch(rows, out, ExtractConfig(params="cui2023"), progress=False)
    assert res.interrupted and res.n_ok == 2
    monkeypatch.setattr(batch, "_safe_case", real)
    res2 = run_batch(rows, out, ExtractConfig(params="cui2023"), resume=True, progress=False)
    assert res2.n_skipped == 2 and res2.n_ok == 4


def test_parallel_and_dask_equal_sequential(manifest, tmp_path):
    rows = [r for r in read_manifest(manifest) if not r["case_id"].startswith("BAD")][:3]
    cfg = ExtractConfig(params="cui2023", rings_mm=(3.0,))
    seq = run_batch(rows, tmp_path / "s.csv", cfg, progress=False)
    par = run_batch(rows, tmp_path / "p.csv", cfg, jobs=2, progress=False)
    pytest.importorskip("dask.distributed")
    from dask.distributed import LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as lc:
        dsk = run_batch(rows, tmp_path / "d.csv", cfg, progress=False,
                        options=BatchOptions(backend="dask", scheduler=lc.scheduler_address))
    assert seq.n_ok == par.n_ok == dsk.n_ok == 3
    a = pd.read_csv(tmp_path / "s.csv")
    pd.testing.assert_frame_equal(a, pd.read_csv(tmp_path / "p.csv"))
    pd.testing.assert_frame_equal(a, pd.read_csv(tmp_path / "d.csv"))


def test_patient_aggregation_from_manifest(cohort, tmp_path):
    rows = read_manifest(cohort / "cohort.csv")
    res = run_batch(rows, tmp_path / "f.csv", ExtractConfig(params="cui2023"), progress=False,
                    options=BatchOptions(aggregate="mean"))
    img = pd.read_csv(tmp_path / "f.csv")
    pat = pd.read_csv(tmp_path / "f_patients.csv")
    assert len(pat) == len({r["patient_id"] for r in rows}) < len(img)
    two = pat[pat.n_images == 2].iloc[0]
    members = img[img.case_id.str.startswith(two.case_id + "-")]
    col = "tumor__original_firstorder_Mean"
    assert two[col] == pytest.approx(members[col].mean())
    assert res.exit_code == 0


def test_manifest_validation(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("case_id,image\nA,a.png\n")
    with pytest.raises(InputError, match=r"lacks column\(s\) \['mask'\]"):
        read_manifest(p)
    p.write_text("case_id,image,mask\nA,a.png,b.png\nA,c.png,d.png\n")
    with pytest.raises(InputError, match="duplicate case_id 'A'"):
        read_manifest(p)
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "none.csv")


def test_cli_exit_codes(cohort, tmp_path, capsys):
    img, m = cohort / "images" / "P0001-1.dcm", cohort / "masks" / "P0001-1.png"
    out = tmp_path / "one.csv"
    assert main(["extract", "--image", str(img), "--mask", str(m), "--params", "cui2023",
                 "--out", str(out), "--no-progress"]) == 0
    assert pd.read_csv(out).case_id.tolist() == ["P0001-1"]
    capsys.readouterr()
    assert main(["extract", "--image", str(img), "--mask", str(tmp_path / "x.png"),
                 "--out", str(out), "--no-progress"]) == 2
    assert main(["extract", "--manifest", str(tmp_path / "none.csv"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "none.csv: manifest not found" in err
    assert main(["extract", "--image", str(img), "--mask", str(m), "--params", "nope",
                 "--out", str(out)]) == 2
    with pytest.raises(SystemExit) as e:      # argparse: usage error
        main(["extract"])
    assert e.value.code == 2


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "HER2RadiomicsLib", "presets"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "cui2023" in r.stdout
