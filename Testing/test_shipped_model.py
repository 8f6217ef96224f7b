"""The shipped BUS-BRA model: loads, matches its card, and segments synthetic lesions."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from HER2RadiomicsLib.segmentation.inference import DEFAULT_MODEL, Segmenter, card_path, sha256_of


def test_weights_and_card_ship_together():
    assert DEFAULT_MODEL.exists(), "the default model must ship with the library"
    card = json.loads(card_path(DEFAULT_MODEL).read_text())
    assert card["sha256"] == sha256_of(DEFAULT_MODEL)
    assert DEFAULT_MODEL.stat().st_size < 10 * 1024 * 1024
    for key in ("architecture", "input_size", "normalisation", "training_data", "citation",
                "validation", "latency"):
        assert key in card, key
    assert "Gómez-Flores" in card["citation"]
    v = card["validation"]
    # the numbers in docs/segmentation.md; a retrained model that does worse must not ship silently
    assert v["n"] >= 300 and v["mean_dice"] >= 0.85 and v["median_dice"] >= 0.9
    assert v["miss_rate_dice_lt_0_1"] <= 0.03


def test_segments_synthetic_lesions(cohort):
    """Dice against the generator's ground truth on the fixture cohort's images."""
    import csv
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.readers.metrics import dice
    seg = Segmenter.from_default()
    rows = list(csv.DictReader(open(cohort / "cohort.csv")))
    scores = []
    for r in rows:
        li, truth = load_case(cohort / r["image"], cohort / r["mask"])
        res = seg.predict(li.image)
        m = sitk.GetArrayFromImage(res.mask) > 0
        assert m.any(), r["case_id"]
        assert res.mask.GetSpacing() == li.image.GetSpacing()
        scores.append(dice(sitk.GetArrayFromImage(truth) > 0, m))
    assert np.median(scores) > 0.7, scores


def test_auto_mask_stays_inside_the_field_of_view_and_reports_confidence(cohort):
    """On every fixture image (sector scans included) the CNN draws only inside the detected
    field of view, and a good mask comes with a high confidence and no flags."""
    import csv
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.readers.metrics import dice
    from HER2RadiomicsLib.imaging.rings import detect_fov
    from HER2RadiomicsLib.segmentation.inference import LOW_CONFIDENCE
    seg = Segmenter.from_default()
    for r in csv.DictReader(open(cohort / "cohort.csv")):
        li, truth = load_case(cohort / r["image"], cohort / r["mask"])
        res = seg.predict(li.image)
        m = sitk.GetArrayFromImage(res.mask) > 0
        fov = sitk.GetArrayFromImage(detect_fov(li.image)) > 0
        assert not (m & ~fov).any(), r["case_id"]
        prob = sitk.GetArrayFromImage(res.probability)
        assert res.info["confidence"] == pytest.approx(prob[m].mean())     # its definition
        if dice(sitk.GetArrayFromImage(truth) > 0, m) > 0.8:
            assert res.info["confidence"] >= LOW_CONFIDENCE and not res.info["flags"]


def test_noise_is_flagged_not_trusted():
    rng = np.random.default_rng(1)
    img = sitk.GetImageFromArray(rng.uniform(0, 255, (200, 240)).astype(np.float32))
    res = Segmenter.from_default().predict(img)
    # the network does draw a confident "lesion" in noise: only the statistics check catches it
    assert any("unlike B-mode ultrasound" in f for f in res.info["flags"]), res.info


def _dicom(path, modality, arr):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    fm = FileMetaDataset()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    fm.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = fm
    ds.SOPClassUID, ds.SOPInstanceUID = fm.MediaStorageSOPClassUID, fm.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_non_ultrasound_dicom_is_refused_colour_is_flagged(tmp_path, capsys):
    from HER2RadiomicsLib.cli import main
    rng = np.random.default_rng(0)
    mg = _dicom(tmp_path / "mammo.dcm", "MG", rng.integers(0, 4000, (64, 64)))
    rc = main(["segment", "--image", str(mg), "--out", str(tmp_path / "m.nrrd")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "modality MG, not ultrasound" in err[0]
    assert not (tmp_path / "m.nrrd").exists()
    # a grey scan saved as RGB with a coloured (Doppler-like) box
    from HER2RadiomicsLib.imaging.io import read_image
    from HER2RadiomicsLib.segmentation.modality import check_ultrasound
    grey = rng.rayleigh(40, (120, 160)).clip(0, 255)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    rgb[30:70, 40:100] = [200, 30, 30]
    sitk.WriteImage(sitk.GetImageFromArray(rgb.astype(np.uint8), isVector=True),
                    str(tmp_path / "doppler.png"))
    ld = read_image(tmp_path / "doppler.png")
    assert ld.provenance["colour_fraction"] == pytest.approx(40 * 60 / (120 * 160))
    flags = check_ultrasound(ld)
    assert len(flags) == 1 and "Doppler" in flags[0]
    sitk.WriteImage(sitk.GetImageFromArray(grey.astype(np.uint8)), str(tmp_path / "g.png"))
    assert check_ultrasound(read_image(tmp_path / "g.png")) == []
