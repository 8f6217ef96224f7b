"""The reader station on the hospital's archive: every Save of a DICOM case also writes the
contour as a DICOM SEG (reader in the content creator and the series description, one series
per study, case and reader); ``station create --dicomweb`` builds the queue from an archive's
ultrasound images; the SEGs are stored back with STOW-RS, and a store that fails loses no Save.

The archive is a real Orthanc started here (skipped, saying why, where it is not installed).
References are independent of the code under test: the masks given to Save, the SEG's pixels
unpacked here from its Pixel Data bits, the archive's own QIDO-RS answers, dciodvfy.
"""
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("highdicom", reason="the [pacs] extra (highdicom) is not installed")
pytest.importorskip("dicomweb_client", reason="the [pacs] extra (dicomweb-client) is missing")
pydicom = pytest.importorskip("pydicom")

from us_dicom import lesion, us_image  # noqa: E402

from HER2RadiomicsLib.cli import main  # noqa: E402
from HER2RadiomicsLib.errors import InputError  # noqa: E402
from HER2RadiomicsLib.pacs import orthanc  # noqa: E402
from HER2RadiomicsLib.pacs.dicomweb import Auth, Pacs  # noqa: E402
from HER2RadiomicsLib.station import archive, dicom_seg  # noqa: E402
from HER2RadiomicsLib.station.store import StudyStore  # noqa: E402

NEEDS_ORTHANC = pytest.mark.skipif(bool(orthanc.missing_reason()),
                                   reason=orthanc.missing_reason() or "Orthanc is installed")
ENV = ("HER2RADIOMICS_PACS_TOKEN", "HER2RADIOMICS_PACS_USER", "HER2RADIOMICS_PACS_PASSWORD")


def seg_pixels(ds) -> np.ndarray:
    """The first frame of a binary SEG, unpacked here from its Pixel Data (1 bit per pixel,
    least significant bit first: DICOM PS3.5 8.1.1), not by the library's reader."""
    n = int(ds.Rows) * int(ds.Columns)
    bits = np.unpackbits(np.frombuffer(ds.PixelData, np.uint8), bitorder="little")
    return bits[:n].reshape(int(ds.Rows), int(ds.Columns)).astype(bool)


def referenced(ds) -> set:
    return {str(i.ReferencedSOPInstanceUID) for s in ds.ReferencedSeriesSequence
            for i in s.ReferencedInstanceSequence}


@pytest.fixture
def dicom_study(tmp_path):
    """A station study of two DICOM ultrasound cases, readers R1 and R2, empty start."""
    imgs = [us_image(tmp_path / "img" / f"c{i}.dcm", seed=i) for i in range(2)]
    (tmp_path / "m.csv").write_text("case_id,image\n" + "".join(
        f"c{i},{p}\n" for i, p in enumerate(imgs)))
    store, _ = StudyStore.create(tmp_path / "study", tmp_path / "m.csv", ["R1", "R2"],
                                 start="empty", seed=3)
    return store, imgs


def test_a_save_writes_the_readers_seg_and_a_resave_replaces_it(dicom_study):
    store, imgs = dicom_study
    first, second = lesion(), lesion(grow=2)
    path = store.save_contour("R1", "c0", first.astype(np.uint8))
    seg_file = path.with_name("c0.seg.dcm")
    ds = pydicom.dcmread(seg_file)
    image = pydicom.dcmread(imgs[0])
    assert ds.Modality == "SEG" and referenced(ds) == {image.SOPInstanceUID}
    assert ds.StudyInstanceUID == image.StudyInstanceUID
    assert str(ds.ContentCreatorName).rstrip("^") == "R1" and "R1" in ds.SeriesDescription
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"
    assert np.array_equal(seg_pixels(ds), first)
    if shutil.which("dciodvfy"):
        res = subprocess.run(["dciodvfy", str(seg_file)], capture_output=True, text=True,
                             timeout=60)
        assert not [ln for ln in (res.stdout + res.stderr).splitlines()
                    if ln.startswith("Error")], res.stderr
    # the replace rule: a second Save is a new instance of the same series, one file here
    store.save_contour("R1", "c0", second.astype(np.uint8))
    again = pydicom.dcmread(seg_file)
    assert again.SeriesInstanceUID == ds.SeriesInstanceUID
    assert again.SOPInstanceUID != ds.SOPInstanceUID
    assert int(again.InstanceNumber) == int(ds.InstanceNumber) + 1
    assert np.array_equal(seg_pixels(again), second)
    assert sorted(p.name for p in seg_file.parent.glob("*.dcm")) == ["c0.seg.dcm"]
    # another reader, another series; the same study reopened, the same series
    r2 = pydicom.dcmread(store.save_contour("R2", "c0", first.astype(np.uint8))
                         .with_name("c0.seg.dcm"))
    assert r2.SeriesInstanceUID != ds.SeriesInstanceUID
    assert dicom_seg.series_uid(StudyStore(store.root).meta, "c0", "R1") == ds.SeriesInstanceUID
    assert store.sidecar("R1", "c0")["dicom_seg"]["sop_uid"] == again.SOPInstanceUID


def test_a_seg_that_cannot_be_written_never_undoes_the_save(dicom_study, monkeypatch):
    store, _ = dicom_study

    def broken(*a, **k):
        raise ValueError("disk says no")
    monkeypatch.setattr(dicom_seg, "write_reader_seg", broken)
    path = store.save_contour("R1", "c1", lesion().astype(np.uint8))
    assert path.exists() and store.is_done("R1", "c1")
    assert store.sidecar("R1", "c1")["dicom_seg_error"] == "disk says no"
    assert "1 SEG(s) not written" in archive.status_line(store)


def test_a_png_study_writes_no_seg(tmp_path):
    import SimpleITK as sitk
    sitk.WriteImage(sitk.GetImageFromArray(np.full((64, 80), 90, np.uint8)),
                    str(tmp_path / "c.png"))
    (tmp_path / "m.csv").write_text("case_id,image,spacing_x_mm,spacing_y_mm\nc,c.png,0.1,0.1\n")
    store, _ = StudyStore.create(tmp_path / "s", tmp_path / "m.csv", ["R1"], start="empty",
                                 seed=1)
    path = store.save_contour("R1", "c", lesion().astype(np.uint8))
    assert not list(path.parent.glob("*.seg.dcm"))
    assert "dicom_seg" not in store.sidecar("R1", "c") and store.dicom_segs() == []
    assert archive.status_line(store) == ""


def test_the_readers_segs_make_the_same_reader_study_as_their_masks(tmp_path, capsys):
    from us_dicom import dice
    imgs = [us_image(tmp_path / f"c{i}.dcm", seed=i) for i in range(3)]
    (tmp_path / "m.csv").write_text("case_id,image\n" + "".join(
        f"c{i},{p}\n" for i, p in enumerate(imgs)))
    store, _ = StudyStore.create(tmp_path / "study", tmp_path / "m.csv", ["R1", "R2"],
                                 start="empty", seed=3)
    for i in range(3):
        store.save_contour("R1", f"c{i}", lesion().astype(np.uint8))
        store.save_contour("R2", f"c{i}", lesion(grow=i + 1).astype(np.uint8))
    rc = main(["reader-study", "--manifest", str(tmp_path / "m.csv"), "--seg-dir",
               str(store.root / "contours"), "--out", str(tmp_path / "rs"), "--no-progress"])
    assert rc in (0, 1), capsys.readouterr().err
    agree = pd.read_csv(tmp_path / "rs" / "agreement.csv").set_index("case_id")
    for i in range(3):                       # agreement.csv keeps 6 significant digits
        assert agree.loc[f"c{i}", "dice"] == pytest.approx(
            dice(lesion(), lesion(grow=i + 1)), abs=1e-5)
    assert set(agree["reader_a"]) | set(agree["reader_b"]) == {"R1", "R2"}


def test_the_coordinator_page_says_what_was_saved_as_seg(dicom_study):
    pytest.importorskip("trame", reason="the [station] extra (trame-slicer) is not installed")
    from trame.app import get_server

    from HER2RadiomicsLib.station.coordinator import CoordinatorStation
    store, _ = dicom_study
    store.save_contour("R1", "c0", lesion().astype(np.uint8))
    store.meta["archive"] = {"url": "http://127.0.0.1:1/dicom-web", "studies": []}
    app = CoordinatorStation(store, server=get_server("seg-status", client_type="vue3"))
    assert app.state.co_archive == ("1 contour(s) saved as DICOM SEG; 0 stored in the archive "
                                    "http://127.0.0.1:1/dicom-web, 1 waiting.")


# -- against a real Orthanc ------------------------------------------------------------------

@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """An Orthanc holding patient PA's study A (two ultrasound images and a secondary capture)
    and study B (a secondary capture only)."""
    root = tmp_path_factory.mktemp("archive")
    with orthanc.LocalOrthanc() as server:
        client = Pacs(server.dicomweb_url)
        a = [us_image(root / f"a{i}.dcm", seed=10 + i, study_uid="1.2.826.0.1.3680043.10.1",
                      patient="PA") for i in range(2)]
        a.append(us_image(root / "a_sc.dcm", study_uid="1.2.826.0.1.3680043.10.1",
                          modality="OT", patient="PA"))
        b = us_image(root / "b_sc.dcm", study_uid="1.2.826.0.1.3680043.10.2", modality="OT",
                     patient="PA")
        client.store([pydicom.dcmread(p) for p in a], "1.2.826.0.1.3680043.10.1")
        client.store([pydicom.dcmread(b)], "1.2.826.0.1.3680043.10.2")
        yield server, client, a


@pytest.fixture
def no_env_credentials(monkeypatch):
    for k in ENV:
        monkeypatch.delenv(k, raising=False)


def one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@NEEDS_ORTHANC
def test_a_station_on_the_archive_round_trip(pacs, tmp_path, capsys, no_env_credentials):
    server, client, originals = pacs
    study = tmp_path / "study"
    assert main(["station", "create", "--study", str(study), "--dicomweb", server.dicomweb_url,
                 "--study-uid", "1.2.826.0.1.3680043.10.1", "--readers", "R1,R2",
                 "--start", "empty", "--seed", "5"]) == 0
    store = StudyStore(study)
    assert len(store.cases) == 2                          # the secondary capture is no case
    got = {pydicom.dcmread(c["image"]).SOPInstanceUID: pydicom.dcmread(c["image"])
           for c in store.cases.values()}
    for p in originals[:2]:                               # the archive's pixels, as sent
        o = pydicom.dcmread(p)
        assert got[o.SOPInstanceUID].PixelData == o.PixelData
    meta = json.loads((study / "study.json").read_text())
    assert meta["archive"] == {"url": server.dicomweb_url,
                               "studies": ["1.2.826.0.1.3680043.10.1"]}
    case = store.queue("R1")[0]
    sop = pydicom.dcmread(store.cases[case]["image"]).SOPInstanceUID
    store.save_contour("R1", case, lesion().astype(np.uint8))
    capsys.readouterr()
    assert main(["station", "push", "--study", str(study)]) == 0
    assert "1 DICOM SEG(s) stored; 0 waiting" in capsys.readouterr().out
    segs = [m for m in client.instances("1.2.826.0.1.3680043.10.1")
            if m.get("SOPClassUID") == "1.2.840.10008.5.1.4.1.1.66.4"]
    assert len(segs) == 1
    back = client.retrieve("1.2.826.0.1.3680043.10.1", segs[0]["SeriesInstanceUID"],
                           segs[0]["SOPInstanceUID"])
    assert referenced(back) == {sop} and str(back.ContentCreatorName).rstrip("^") == "R1"
    assert np.array_equal(seg_pixels(back), lesion())
    # a re-save is a second instance of the same series; nothing is sent twice
    store.save_contour("R1", case, lesion(grow=1).astype(np.uint8))
    assert main(["station", "push", "--study", str(study)]) == 0
    assert main(["station", "push", "--study", str(study)]) == 0
    assert "0 DICOM SEG(s) stored" in capsys.readouterr().out
    segs = [m for m in client.instances("1.2.826.0.1.3680043.10.1")
            if m.get("SOPClassUID") == "1.2.840.10008.5.1.4.1.1.66.4"]
    assert len(segs) == 2 and len({m["SeriesInstanceUID"] for m in segs}) == 1
    assert "2 stored in the archive" not in archive.status_line(store)   # one contour, stored
    assert "1 stored in the archive" in archive.status_line(store)


@NEEDS_ORTHANC
def test_a_failed_store_keeps_the_save_and_is_retried(pacs, dicom_study, tmp_path):
    server, client, _ = pacs
    store, imgs = dicom_study
    dead = f"http://127.0.0.1:{orthanc._free_port()}/dicom-web"
    store.meta["archive"] = {"url": dead, "studies": []}
    path = store.save_contour("R1", "c0", lesion().astype(np.uint8))
    assert path.exists() and store.is_done("R1", "c0")
    down = archive.ArchiveSync(store, dead, out=open(tmp_path / "log", "w"))
    res = down.step()
    assert res["stored"] == 0 and res["pending"] == 1 and "cannot reach" in res["error"]
    line = archive.status_line(store)
    assert "1 waiting" in line and "cannot reach" in line
    # the archive answers again (here: the same contours sent to the live one)
    client.store([pydicom.dcmread(imgs[0])], pydicom.dcmread(imgs[0]).StudyInstanceUID)
    up = archive.ArchiveSync(store, server.dicomweb_url, out=open(tmp_path / "log", "a"))
    assert up.step() == {"stored": 1, "pending": 0, "error": ""}
    assert client.exists(pydicom.dcmread(imgs[0]).StudyInstanceUID,
                         store.sidecar("R1", "c0")["dicom_seg"]["sop_uid"])


@NEEDS_ORTHANC
def test_a_patient_query_takes_the_studies_with_ultrasound_and_serve_stores(
        pacs, tmp_path, capsys, no_env_credentials):
    import argparse

    from HER2RadiomicsLib.station.commands import _archive_sync
    server, client, _ = pacs
    study = tmp_path / "study"
    assert main(["station", "create", "--study", str(study), "--dicomweb", server.dicomweb_url,
                 "--patient-id", "PA", "--readers", "R1", "--start", "empty"]) == 0
    store = StudyStore(study)                 # study B (no ultrasound) is left out
    assert len(store.cases) == 2
    assert store.meta["archive"]["studies"] == ["1.2.826.0.1.3680043.10.1"]
    # what `station serve` runs: the launcher's thread stores a Save within its first pass
    sync = _archive_sync(study, argparse.Namespace(auth_file=None, ca_bundle=None))
    sync.out = open(tmp_path / "log", "w")
    case = store.queue("R1")[0]
    store.save_contour("R1", case, lesion().astype(np.uint8))
    sync.start()
    try:
        for _ in range(100):
            if not any(s["pending"] for s in store.dicom_segs()):
                break
            sync.stopped.wait(0.1)
    finally:
        sync.stop()
    assert client.exists("1.2.826.0.1.3680043.10.1",
                         store.sidecar("R1", case)["dicom_seg"]["sop_uid"])
    bad = tmp_path / "auth"
    bad.write_text("password123\n")
    with pytest.raises(InputError) as exc:           # refused before anything starts
        _archive_sync(study, argparse.Namespace(auth_file=str(bad), ca_bundle=None))
    assert str(bad) in str(exc.value) and "password123" not in str(exc.value)


@NEEDS_ORTHANC
def test_bad_archive_input_is_one_line(pacs, tmp_path, capsys, monkeypatch,
                                       no_env_credentials):
    server, _, _ = pacs
    base = ["station", "create", "--readers", "R1", "--start", "empty"]
    no_us = main(base + ["--study", str(tmp_path / "s1"), "--dicomweb", server.dicomweb_url,
                         "--study-uid", "1.2.826.0.1.3680043.10.2"])
    line = one_error_line(capsys)
    assert no_us == 2 and "no ultrasound image" in line and server.dicomweb_url in line
    assert not (tmp_path / "s1" / "study.json").exists()
    assert main(base + ["--study", str(tmp_path / "s2"), "--dicomweb", server.dicomweb_url,
                        "--study-uid", "1.2.3.4.404"]) == 2
    assert "not found" in one_error_line(capsys)
    dead = f"http://127.0.0.1:{orthanc._free_port()}/dicom-web"
    assert main(base + ["--study", str(tmp_path / "s3"), "--dicomweb", dead,
                        "--study-uid", "1.2.3"]) == 2
    assert "cannot reach" in one_error_line(capsys)
    assert main(base + ["--study", str(tmp_path / "s4"), "--dicomweb",
                        "http://u:secret@127.0.0.1:1/dicom-web", "--study-uid", "1.2.3"]) == 2
    line = one_error_line(capsys)
    assert "credentials in the URL" in line and "secret" not in line
    assert main(base + ["--study", str(tmp_path / "s5"), "--study-uid", "1.2.3",
                        "--manifest", "x.csv"]) == 2
    assert "--dicomweb" in one_error_line(capsys)
    with orthanc.LocalOrthanc(users={"reader": "right"}) as locked:
        monkeypatch.setenv("HER2RADIOMICS_PACS_USER", "reader")
        monkeypatch.setenv("HER2RADIOMICS_PACS_PASSWORD", "wrong")
        assert main(base + ["--study", str(tmp_path / "s6"), "--dicomweb",
                            locked.dicomweb_url, "--study-uid", "1.2.3"]) == 2
        line = one_error_line(capsys)
        assert "refused the credentials" in line and "wrong" not in line
        monkeypatch.setenv("HER2RADIOMICS_PACS_PASSWORD", "right")      # and the right ones
        assert Pacs(locked.dicomweb_url, Auth("basic", "right", "reader")).instances(
            "1.2.3") == []
