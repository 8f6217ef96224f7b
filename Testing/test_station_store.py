"""The reader station's study store (issue 13's backend): blind per-reader queues from a seed,
atomic contours in the image's geometry, resume after a restart, access by token, agreement
equal to an independent Dice, and a manifest the reader-study command accepts."""
import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from HER2RadiomicsLib.errors import InputError
from HER2RadiomicsLib.station.store import AccessDenied, Identity, StudyStore


@pytest.fixture
def study(cohort, tmp_path):
    store, tokens = StudyStore.create(tmp_path / "study", cohort / "cohort.csv", ["R1", "R2"],
                                      start="empty", seed=7)
    return store, tokens


def _disk(store, case, r, shift=0):
    img = store.load_image(case).image
    h, w = sitk.GetArrayViewFromImage(img).shape
    yy, xx = np.indices((h, w))
    return ((yy - h // 2) ** 2 + (xx - w // 2 - shift) ** 2 <= r * r).astype(np.uint8)


def test_queues_are_seeded_per_reader_blind_and_deterministic(study, cohort, tmp_path):
    store, tokens = study
    cases = pd.read_csv(cohort / "cohort.csv").case_id.astype(str).tolist()
    q1, q2 = store.queue("R1"), store.queue("R2")
    assert sorted(q1) == sorted(q2) == sorted(cases) and q1 != q2
    again, _ = StudyStore.create(tmp_path / "again", cohort / "cohort.csv", ["R1", "R2"],
                                 seed=7)
    assert again.queue("R1") == q1                          # the recorded seed reproduces it
    meta = json.loads((store.root / "study.json").read_text())
    assert meta["seed"] == 7
    assert "her2" not in json.dumps(meta["cases"])          # labels never enter the study
    assert store.case_info(q1[0]) == {"case_id": q1[0]}
    assert all(t not in json.dumps(meta) for t in tokens.values())   # hashes only


def test_tokens_and_access(study):
    store, tokens = study
    assert store.authenticate(tokens["R1"]) == Identity("reader", "R1")
    assert store.authenticate(tokens["coordinator"]) == Identity("coordinator")
    for bad in ("", "nope", tokens["R1"] + "x"):
        with pytest.raises(AccessDenied):
            store.authenticate(bad)
    case = store.queue("R2")[0]
    store.save_contour("R2", case, _disk(store, case, 20))
    r1 = store.authenticate(tokens["R1"])
    with pytest.raises(AccessDenied, match="own contours"):
        store.load_contour(r1, "R2", case)
    assert store.load_contour(store.authenticate(tokens["coordinator"]), "R2", case) is not None
    for bad_case in ("../study.json", "/etc/passwd", "P9999-1"):
        with pytest.raises(AccessDenied, match="not in this study"):
            store.load_image(bad_case)
    with pytest.raises(AccessDenied):
        store.queue("R3")


def test_contours_keep_the_image_geometry_and_saving_is_atomic(study):
    store, _ = study
    case = store.queue("R1")[0]
    m = _disk(store, case, 25)
    path = store.save_contour("R1", case, m, seconds=12.5, edits=["paint", "erase"])
    img = store.load_image(case).image
    saved = sitk.ReadImage(str(path))
    assert saved.GetSize() == img.GetSize() and saved.GetSpacing() == img.GetSpacing()
    assert saved.GetOrigin() == img.GetOrigin() and saved.GetDirection() == img.GetDirection()
    assert np.array_equal(sitk.GetArrayFromImage(saved), m)
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["reader"] == "R1" and side["start_source"] == "empty"
    assert side["seconds"] == 12.5 and side["edits"] == ["paint", "erase"]
    # no temporary file is left, an empty or wrong-sized contour is refused
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    with pytest.raises(InputError, match="empty"):
        store.save_contour("R1", case, np.zeros_like(m))
    with pytest.raises(InputError, match="size"):
        store.save_contour("R1", case, np.ones((5, 5)))


def test_restart_resumes_each_reader_and_keeps_the_contour_in_progress(study):
    store, _ = study
    q = store.queue("R1")
    store.save_contour("R1", q[0], _disk(store, q[0], 20))
    store.skip("R1", q[1])
    store.autosave("R1", q[2], _disk(store, q[2], 15))
    store.flag("R1", q[2], "shadowing hides the lower margin")
    reopened = StudyStore(store.root)                       # a restarted server
    assert reopened.next_case("R1") == q[2]
    assert reopened.next_case("R2") == reopened.queue("R2")[0]
    auto = reopened.autosaved("R1", q[2])
    assert np.array_equal(sitk.GetArrayFromImage(auto), _disk(store, q[2], 15))
    p = reopened.progress().set_index("reader")
    assert p.loc["R1"].to_dict() == {"done": 1, "skipped": 1, "flagged": 1, "total": len(q),
                                     "left": len(q) - 2}
    assert reopened.flags() == [("R1", q[2], "shadowing hides the lower margin")]
    # an interrupted save (label written, sidecar not) leaves the case to do again
    reopened._contour_path("R1", q[2]).write_bytes(b"half")
    assert not reopened.is_done("R1", q[2]) and reopened.next_case("R1") == q[2]


def test_agreement_equals_an_independent_dice_and_exports_a_reader_manifest(study, tmp_path):
    from HER2RadiomicsLib.readers.study import read_reader_manifest
    store, _ = study
    case = store.queue("R1")[0]
    a, b = _disk(store, case, 30), _disk(store, case, 30, shift=6)
    store.save_contour("R1", case, a)
    assert store.agreement().empty                          # one reader: nothing to compare
    store.save_contour("R2", case, b)
    ag = store.agreement()
    assert len(ag) == 1 and ag.loc[0, "case_id"] == case
    assert ag.loc[0, "dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    # HD95 in mm: the discs are shifted by 6 columns of x-spacing
    sx = store.load_image(case).image.GetSpacing()[0]
    assert ag.loc[0, "hd95_mm"] == pytest.approx(6 * sx, rel=0.25)
    man = store.export_reader_manifest(tmp_path / "readers.csv")
    df, problems = read_reader_manifest(man)
    assert problems == [] and sorted(df.reader) == ["R1", "R2"]


def test_create_refuses_bad_input(cohort, tmp_path):
    with pytest.raises(InputError, match="reader names"):
        StudyStore.create(tmp_path / "a", cohort / "cohort.csv", ["../evil"])
    with pytest.raises(InputError, match="start source"):
        StudyStore.create(tmp_path / "b", cohort / "cohort.csv", ["R1"], start="magic")
    StudyStore.create(tmp_path / "c", cohort / "cohort.csv", ["R1"])
    with pytest.raises(InputError, match="exists already"):
        StudyStore.create(tmp_path / "c", cohort / "cohort.csv", ["R1"])
    with pytest.raises(InputError, match="no station study"):
        StudyStore(tmp_path / "nothing")
