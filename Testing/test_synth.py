"""The synthetic cohort: deterministic, ultrasound-like, multi-site, multi-reader, with signal."""
import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import stats

from HER2RadiomicsLib.imaging.io import load_case
from HER2RadiomicsLib.imaging.synth import SITES, generate_cohort


def test_deterministic(tmp_path):
    a = generate_cohort(tmp_path / "a", n_cases=3, seed=11, reader_fraction=0)
    b = generate_cohort(tmp_path / "b", n_cases=3, seed=11, reader_fraction=0)
    generate_cohort(tmp_path / "c", n_cases=3, seed=12, reader_fraction=0)
    assert a.read_text() == b.read_text()
    ia = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "a/images/P0001-1.png")))
    ib = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "b/images/P0001-1.png")))
    ic = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "c/images/P0001-1.png")))
    assert np.array_equal(ia, ib) and not np.array_equal(ia[:50, :50], ic[:50, :50])


def test_manifest_and_files(cohort):
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))
    assert {"case_id", "patient_id", "image", "mask", "site", "age", "menopausal", "er", "pr",
            "ki67", "lesion_size_mm", "her2", "her2_ihc"} <= set(rows[0])
    assert {r["her2"] for r in rows} <= {"zero", "low", "positive"}
    assert len({r["patient_id"] for r in rows}) == 8 < len(rows)     # some second views
    readers = list(csv.DictReader(open(cohort / "readers.csv")))
    assert {r["reader"] for r in readers} == {"R1", "R2", "R3"}
    assert len(readers) == 3 * 4
    for r in rows:
        assert (cohort / r["image"]).exists() and (cohort / r["mask"]).exists()


def test_looks_like_ultrasound(cohort):
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))
    site = {s.name: s for s in SITES}
    for r in rows[:4]:
        li, mask = load_case(cohort / r["image"], cohort / r["mask"])
        assert li.spacing_mm[0] == pytest.approx(site[r["site"]].spacing_mm)
        img = sitk.GetArrayFromImage(li.image)
        les = sitk.GetArrayFromImage(mask) > 0
        from scipy import ndimage as ndi
        ring = ndi.binary_dilation(les, iterations=40) & ~ndi.binary_dilation(les, iterations=8)
        ring &= img > 0
        # hypoechoic lesion: clearly darker than its surroundings
        assert np.median(img[les]) < 0.75 * np.median(img[ring])
        # black background outside the field of view
        assert (img == 0).mean() > 0.05
        # speckle: a homogeneous tissue patch has a grainy, not smooth, texture
        assert img[ring].std() > 8


def test_multi_reader_disagreement_is_realistic(cohort):
    readers = list(csv.DictReader(open(cohort / "readers.csv")))
    by_case = {}
    for r in readers:
        by_case.setdefault(r["case_id"], {})[r["reader"]] = \
            sitk.GetArrayFromImage(sitk.ReadImage(str(cohort / r["mask"]))) > 0
    dices = []
    for masks in by_case.values():
        a, b = masks["R1"], masks["R2"]
        dices.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert 0.75 < np.mean(dices) < 0.98


def test_planted_signal_documented_and_present(tmp_path):
    out = tmp_path / "c"
    generate_cohort(out, n_cases=60, seed=5, reader_fraction=0, second_view_fraction=0)
    truth = json.loads((out / "truth.json").read_text())
    assert truth["signal"]["positive"]["heterogeneity"] > truth["signal"]["zero"]["heterogeneity"]
    rows = list(csv.DictReader(open(out / "cohort.csv")))
    het = np.array([truth["cases"][r["case_id"]]["heterogeneity"] for r in rows])
    y = np.array([r["her2"] == "positive" for r in rows])
    # the latent signal separates the observed (noisy) labels, but not perfectly
    auc = stats.mannwhitneyu(het[y], het[~y]).statistic / (y.sum() * (~y).sum())
    assert 0.65 < auc < 0.99
    noisy = sum(truth["cases"][r["case_id"]]["her2_true"] != r["her2"] for r in rows)
    assert 0 < noisy < 0.3 * len(rows)


def test_same_files_for_any_number_of_processes(tmp_path):
    # the demo generates its cohort with --jobs processes: every file (DICOM included, UIDs
    # and all) must be the same bytes as a one-process run, or cached stages downstream and
    # published figures would depend on the machine's core count
    import hashlib

    def digests(root):
        return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    for jobs in (1, 2):
        generate_cohort(tmp_path / str(jobs), n_cases=5, seed=5, reader_fraction=0.5,
                        second_view_fraction=0.5, jobs=jobs)
    one, two = digests(tmp_path / "1"), digests(tmp_path / "2")
    assert any(k.endswith("-2.dcm") for k in one), "no second view: the test covers too little"
    assert any(k.startswith("readers/") for k in one)
    assert one == two
