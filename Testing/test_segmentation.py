"""CNN auto-mask: architecture, geometry round trip, prompts, post-processing, model loading,
training smoke test, CLI, and the contour metrics it is evaluated with."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from HER2RadiomicsLib.errors import InputError, ModelError
from HER2RadiomicsLib.readers.metrics import compare_masks
from HER2RadiomicsLib.segmentation.export import export_model
from HER2RadiomicsLib.segmentation.inference import Segmenter, postprocess, sha256_of
from HER2RadiomicsLib.segmentation.networks import build_network
from HER2RadiomicsLib.segmentation.preprocess import Letterbox

TINY = {"name": "unet2d", "version": 1, "base_channels": 4, "depth": 2}


class DarknessNet(torch.nn.Module):
    """Deterministic stand-in network: logit = 20 (0.35 - x), i.e. dark pixels are 'lesion'."""

    def forward(self, x):
        return 20 * (0.35 - x)


def blobs_image(shape=(131, 177), blobs=((60, 80, 18), (100, 30, 8)), spacing=(0.3, 0.2)):
    yy, xx = np.indices(shape)
    arr = np.full(shape, 200.0, np.float32)
    truth = []
    for cy, cx, r in blobs:
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        arr[m] = 20
        truth.append(m)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin((12.5, -3.0))
    img.SetDirection((0.0, 1.0, 1.0, 0.0))       # a flipped/rotated direction must survive
    return img, truth


@pytest.mark.parametrize("depth,base,size", [(2, 4, 32), (4, 12, 160), (3, 8, 64)])
def test_architecture_shapes(depth, base, size):
    net = build_network({"name": "unet2d", "version": 1, "base_channels": base, "depth": depth})
    out = net.eval()(torch.zeros(2, 1, size, size))
    assert out.shape == (2, 1, size, size)
    with pytest.raises(ValueError, match="unsupported"):
        build_network({"name": "resnet", "version": 1})


@pytest.mark.parametrize("h,w", [(131, 177), (300, 97), (64, 64), (33, 250)])
def test_letterbox_round_trip(h, w):
    yy, xx = np.indices((h, w))
    smooth = np.sin(yy / 17.0) + np.cos(xx / 23.0)
    lb = Letterbox(h, w, 96)
    back = lb.inverse(lb.forward(smooth))
    assert back.shape == (h, w)
    assert np.abs(back - smooth)[2:-2, 2:-2].max() < 0.15      # resampling error only
    canvas = lb.forward(np.ones((h, w)))
    ih, iw = lb.inner_shape
    assert canvas.sum() == pytest.approx(ih * iw, rel=1e-6)    # padding is exactly zero


def test_geometry_preserved_and_mask_correct():
    img, truth = blobs_image()
    seg = Segmenter(DarknessNet(), size=96, tta=True)
    res = seg.predict(img, use_fov=False)
    for out in (res.mask, res.probability):
        assert out.GetSize() == img.GetSize()
        assert out.GetSpacing() == img.GetSpacing()
        assert out.GetOrigin() == img.GetOrigin()
        assert out.GetDirection() == img.GetDirection()
    mask = sitk.GetArrayFromImage(res.mask) > 0
    assert compare_masks(truth[0], mask)["dice"] > 0.9        # largest lesion chosen
    assert not (mask & truth[1]).any()


def test_prompts_select_the_lesion():
    img, truth = blobs_image()
    seg = Segmenter(DarknessNet(), size=96)
    m_click = sitk.GetArrayFromImage(seg.predict(img, click=(30, 100)).mask) > 0
    assert compare_masks(truth[1], m_click)["dice"] > 0.85
    m_box = sitk.GetArrayFromImage(seg.predict(img, box=(15, 85, 45, 115)).mask) > 0
    assert compare_masks(truth[1], m_box)["dice"] > 0.85 and not (m_box & truth[0]).any()
    with pytest.raises(InputError, match="outside"):
        seg.predict(img, click=(500, 5))
    with pytest.raises(InputError, match="overlap"):
        seg.predict(img, box=(400, 400, 500, 500))


def test_postprocess_fills_holes_and_keeps_one_component():
    p = np.zeros((60, 60))
    p[10:40, 10:40] = 0.9
    p[20:25, 20:25] = 0.1          # hole
    p[50:55, 50:55] = 0.95         # small distractor
    m = postprocess(p, smooth_px=0)
    assert m[22, 22] and not m[52, 52] and m.sum() == 900
    m2 = postprocess(p, seed=(52, 52), smooth_px=0)
    assert m2[52, 52] and not m2[22, 22]


def _save_tiny(tmp_path, seed=0):
    torch.manual_seed(seed)
    net = build_network(TINY)
    ck = tmp_path / "best.pt"
    torch.save({"arch": TINY, "model": net.state_dict(), "size": 32}, ck)
    return export_model(ck, tmp_path / "tiny.pt", {"name": "tiny"})


def test_tiny_random_network_full_path(tmp_path):
    w = _save_tiny(tmp_path)
    card = json.loads(w.with_suffix(".json").read_text())
    assert card["sha256"] == sha256_of(w) and card["input_size"] == 32
    seg = Segmenter.load(w)
    img, _ = blobs_image()
    a = sitk.GetArrayFromImage(seg.predict(img).probability)
    b = sitk.GetArrayFromImage(seg.predict(img).probability)
    assert np.array_equal(a, b)                     # deterministic in eval mode
    assert a.shape == img.GetSize()[::-1]


def test_corrupt_or_mismatched_weights(tmp_path):
    w = _save_tiny(tmp_path)
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "bad.pt"
    bad.write_bytes(bytes(data))
    bad.with_suffix(".json").write_text(w.with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="sha256"):
        Segmenter.load(bad)
    card = json.loads(w.with_suffix(".json").read_text())
    card["architecture"]["base_channels"] = 8       # weights no longer fit
    w.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not fit"):
        Segmenter.load(w)
    card["architecture"] = {"name": "vit", "version": 9}
    w.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="not supported"):
        Segmenter.load(w)
    with pytest.raises(ModelError, match="not found"):
        Segmenter.load(tmp_path / "none.pt")


def test_training_smoke_and_resume(cohort, tmp_path):
    from HER2RadiomicsLib.segmentation import training as T
    pairs = list(T.manifest_pairs(cohort / "cohort.csv"))
    ds = T.load_pairs(pairs, size=32, progress=False)
    tr, va = T.patient_split(ds.patients, 0.3, seed=1)
    assert not {ds.patients[i] for i in tr} & {ds.patients[i] for i in va}
    r1 = T.train(ds.subset(tr), ds.subset(va), tmp_path,
                 T.TrainConfig(arch=TINY, epochs=3, batch_size=4, max_minutes=1e-9,
                               progress=False))
    assert r1["epochs_run"] == 1 and r1["stopped"] == "time-limit"
    r2 = T.train(ds.subset(tr), ds.subset(va), tmp_path,
                 T.TrainConfig(arch=TINY, epochs=3, batch_size=4, progress=False))
    assert r2["epochs_run"] == 3
    hist = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert (tmp_path / "best.pt").exists()


def test_metrics_against_brute_force():
    rng = np.random.default_rng(3)
    a = np.zeros((40, 50), bool)
    b = np.zeros_like(a)
    a[5:25, 8:30] = True
    b[9:31, 12:37] = True
    b[rng.integers(9, 31, 20), rng.integers(12, 37, 20)] = False      # ragged
    sp = (0.4, 0.7)
    m = compare_masks(a, b, sp)
    assert m["dice"] == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))
    assert m["jaccard"] == pytest.approx((a & b).sum() / (a | b).sum())
    from scipy import ndimage as ndi
    st = ndi.generate_binary_structure(2, 1)
    ba = np.argwhere(a & ~ndi.binary_erosion(a, st)) * [sp[1], sp[0]]
    bb = np.argwhere(b & ~ndi.binary_erosion(b, st)) * [sp[1], sp[0]]
    d = np.linalg.norm(ba[:, None] - bb[None], axis=2)
    dab, dba = d.min(1), d.min(0)
    assert m["hd"] == pytest.approx(max(dab.max(), dba.max()))
    assert m["hd95"] == pytest.approx(max(np.percentile(dab, 95), np.percentile(dba, 95)))
    assert m["msd"] == pytest.approx((dab.sum() + dba.sum()) / (len(dab) + len(dba)))
    assert m["area_diff_pct"] == pytest.approx(100 * (b.sum() - a.sum()) / a.sum())


def test_cli_segment_and_eval(cohort, tmp_path, capsys, monkeypatch):
    from HER2RadiomicsLib.cli import main
    from HER2RadiomicsLib.segmentation import inference
    monkeypatch.setattr(inference, "get_segmenter",
                        lambda *a, **k: Segmenter(DarknessNet(), size=96))
    # a phantom with known lesions: the CLI's mask is the main lesion (Dice), on its grid
    blobs, truth = blobs_image()
    sitk.WriteImage(blobs, str(tmp_path / "blobs.nrrd"))
    assert main(["segment", "--image", str(tmp_path / "blobs.nrrd"), "--out",
                 str(tmp_path / "blobs_mask.nrrd")]) == 0
    got = sitk.ReadImage(str(tmp_path / "blobs_mask.nrrd"))
    m = sitk.GetArrayFromImage(got) > 0
    assert 2 * (m & truth[0]).sum() / (m.sum() + truth[0].sum()) > 0.95   # measured 0.978
    assert not (m & truth[1]).any()                      # the smaller blob is not the lesion
    assert got.GetDirection() == blobs.GetDirection() and got.GetOrigin() == blobs.GetOrigin()
    img = cohort / "images" / "P0001-1.png"         # PNG without spacing is fine here
    out = tmp_path / "m.nrrd"
    ref = sitk.ReadImage(str(cohort / "masks" / "P0001-1.png"))
    rc = main(["segment", "--image", str(img), "--out", str(out), "--prob-out",
               str(tmp_path / "p.nrrd")])
    assert rc == 0
    m = sitk.ReadImage(str(out))
    assert m.GetSize() == ref.GetSize()
    assert sitk.ReadImage(str(tmp_path / "p.nrrd")).GetPixelID() == sitk.sitkFloat32
    man = tmp_path / "man.csv"
    (tmp_path / "missing.png").write_bytes(b"not a png")      # exists, but unreadable
    man.write_text("case_id,image\nA,%s\nB,%s\n" % (cohort / "images" / "P0002-1.dcm",
                                                     tmp_path / "missing.png"))
    rc = main(["segment", "--manifest", str(man), "--out-dir", str(tmp_path / "seg"),
               "--no-progress"])
    assert rc == 1
    text = capsys.readouterr().out
    assert "B: " in text and "missing.png" in text
    assert (tmp_path / "seg" / "A.nrrd").exists()
    import pandas as pd
    assert pd.read_csv(tmp_path / "seg" / "manifest.csv").case_id.tolist() == ["A"]
    assert pd.read_csv(tmp_path / "seg" / "errors.csv").case_id.tolist() == ["B"]
    # eval against the reference itself via --pred-dir: perfect scores
    pred = tmp_path / "pred"
    pred.mkdir()
    ref = sitk.ReadImage(str(cohort / "masks" / "P0002-1.png"))
    sitk.WriteImage(ref, str(pred / "P0002-1.nrrd"))
    em = tmp_path / "eval.csv"
    em.write_text("case_id,image,mask\nP0002-1,%s,%s\n" % (cohort / "images" / "P0002-1.dcm",
                                                           cohort / "masks" / "P0002-1.png"))
    rc = main(["eval-segmenter", "--manifest", str(em), "--pred-dir", str(pred),
               "--out", str(tmp_path / "metrics.csv"), "--no-progress"])
    assert rc == 0
    summ = json.loads((tmp_path / "metrics.summary.json").read_text())
    assert summ["mean_dice"] == 1.0 and summ["median_hd95"] == 0.0
    assert summ["distance_unit"] == "mm"


US_SOP, SC_SOP = "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.7"
CT_SOP, MG_SOP = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2"


def _header_variant(src, path, modality, sop, regions=True, photometric="MONOCHROME2"):
    """The fixture cohort's ultrasound DICOM with its header changed as an export might."""
    import pydicom
    ds = pydicom.dcmread(str(src))
    if modality is None:
        del ds.Modality
    else:
        ds.Modality = modality
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop
    if not regions:
        del ds.SequenceOfUltrasoundRegions
    ds.PhotometricInterpretation = photometric
    ds.save_as(str(path))
    return path


# (Modality, SOP class, ultrasound regions, photometric) -> refused with / flagged with / clean
US_HEADERS = [
    (("US", US_SOP, True, "MONOCHROME2"), "clean", None),
    (("OT", US_SOP, True, "MONOCHROME2"), "flag", "DICOM Modality OT: treated as ultrasound "
                                                  "because of its SOP class"),
    ((None, SC_SOP, True, "MONOCHROME2"), "flag", "no DICOM Modality: treated as ultrasound "
                                                  "because of its ultrasound regions"),
    ((None, SC_SOP, False, "MONOCHROME2"), "flag", "nothing in the header says ultrasound"),
    (("MG", US_SOP, True, "MONOCHROME2"), "flag", "DICOM Modality MG but SOP class"),
    (("CR", SC_SOP, True, "MONOCHROME2"), "flag", "DICOM Modality CR but ultrasound regions"),
    (("US", SC_SOP, False, "MONOCHROME1"), "flag", "MONOCHROME1"),
    (("US", CT_SOP, False, "MONOCHROME2"), "refuse", "SOP class is CT Image Storage"),
    ((None, MG_SOP, False, "MONOCHROME2"), "refuse", "Digital Mammography X-Ray"),
    (("CR", SC_SOP, False, "MONOCHROME2"), "refuse", "modality CR, not ultrasound"),
]


@pytest.mark.parametrize("header,outcome,text", US_HEADERS)
def test_ultrasound_judged_by_the_whole_dicom_header(header, outcome, text, cohort, tmp_path):
    """Not the Modality tag alone: a mislabelled or missing Modality neither passes nor fails
    silently, and a SOP class of another kind of image is refused whatever Modality says."""
    from HER2RadiomicsLib.imaging.io import read_image
    from HER2RadiomicsLib.segmentation.modality import check_ultrasound
    p = _header_variant(cohort / "images" / "P0001-1.dcm", tmp_path / "x.dcm", *header)
    loaded = read_image(p)
    if outcome == "refuse":
        with pytest.raises(InputError) as e:
            check_ultrasound(loaded)
        msg = str(e.value)
        assert msg.startswith(f"{p}: ") and text in msg and len(msg.splitlines()) == 1, msg
        return
    flags = check_ultrasound(loaded)
    if outcome == "clean":
        assert flags == []
    else:
        assert len(flags) == 1 and text in flags[0], flags


@pytest.mark.parametrize("header,rc,text", [(("OT", US_SOP, True, "MONOCHROME2"), 0,
                                             "flag: DICOM Modality OT"),
                                            (("US", CT_SOP, False, "MONOCHROME2"), 2,
                                             "CT Image Storage")])
def test_cli_segment_mislabelled_dicom(header, rc, text, cohort, tmp_path):
    """As a user runs it: a mislabelled ultrasound export is segmented and says so; a CT image
    labelled US is refused in one line and nothing is written."""
    import subprocess
    import sys
    p = _header_variant(cohort / "images" / "P0001-1.dcm", tmp_path / "x.dcm", *header)
    out = tmp_path / "mask.nrrd"
    r = subprocess.run([sys.executable, "-m", "HER2RadiomicsLib", "segment", "--image", str(p),
                        "--out", str(out)], capture_output=True, text=True, timeout=180)
    assert r.returncode == rc, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    if rc == 0:
        assert out.exists() and text in r.stdout, r.stdout
    else:
        errs = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(errs) == 1 and str(p) in errs[0] and text in errs[0], r.stderr
        assert not out.exists()
