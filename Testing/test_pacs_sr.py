"""DICOM SR TID 1500 of a case (HER2RadiomicsLib.pacs.sr) and the credentials rules of the
DICOMweb client (HER2RadiomicsLib.pacs.dicomweb); no server needed.

The SR's values are read back through highdicom's SR API (not our reader) and the codes checked
against the IBSI reference manual's codes written out here.
"""
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("highdicom", reason="the [pacs] extra (highdicom) is not installed")
pydicom = pytest.importorskip("pydicom")

from HER2RadiomicsLib.errors import InputError  # noqa: E402
from HER2RadiomicsLib.pacs import codes, dicomweb  # noqa: E402
from HER2RadiomicsLib.pacs import seg as dseg  # noqa: E402
from HER2RadiomicsLib.pacs import sr as dsr  # noqa: E402

from test_pacs_seg import _image, _masks  # noqa: E402

FEATURES = {
    "tumor__original_glcm_Contrast": 12.345678901234567,             # IBSI ACUI
    "tumor__original_firstorder_Kurtosis": 3.25,                     # private: not IBSI's
    "tumor__original_shape2D_MaximumDiameter": 17.5,                 # private, mm
    "tumor__wavelet-LH_firstorder_TotalEnergy": 0.125,               # long private name
    "tumor__log-sigma-1-0-mm-3D_firstorder_Mean": -0.1,
    "tumor__original_firstorder_Skewness": float("nan"),             # not a number: left out
    "peri_0-3mm__original_glcm_Contrast": 2.0,
}


def _case(tmp_path):
    image = _image(tmp_path)
    tumor, ring = _masks()
    seg = dseg.build_seg(image, {"tumor": tumor, "peri_0-3mm": ring}, dseg.Algorithm("MANUAL"),
                         series_uid=dsr.derived_uid("s"), sop_uid=dsr.derived_uid("seg"))
    pred = dsr.ModelPrediction("HER2-low", {"zero": 0.25, "HER2-low": 0.75}, "yin2024", "0.1.0",
                               "ab" * 32, rad_score=1.5)
    sr = dsr.build_sr(image, seg, FEATURES, prediction=pred, series_uid=dsr.derived_uid("t"),
                      sop_uid=dsr.derived_uid("sr"))
    return image, seg, sr


def test_every_number_is_in_its_regions_group_exactly(tmp_path):
    import highdicom as hd
    _, seg, sr = _case(tmp_path)
    sr.save_as(tmp_path / "sr.dcm")
    back = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(tmp_path / "sr.dcm"))
    groups = {str(g.tracking_identifier): g
              for g in back.content.get_volumetric_roi_measurement_groups()}
    assert set(groups) == {"tumor", "peri_0-3mm"}
    tumor = {(m.name.value, m.name.scheme_designator, m.method.meaning): (m.value, m.unit.value)
             for m in groups["tumor"].get_measurements()}
    assert tumor[("ACUI", "IBSI", "original image")] == (12.345678901234567, "1")
    assert tumor[("ACUI", "IBSI", "original image")][0] == FEATURES[
        "tumor__original_glcm_Contrast"]                   # FD: the exact double, not a DS
    meanings = {m.name.meaning: (m.value, m.unit.value, m.method.meaning)
                for m in groups["tumor"].get_measurements()}
    assert meanings["firstorder Kurtosis"] == (3.25, "1", "original image")
    assert meanings["shape2D MaximumDiameter"] == (17.5, "mm", "original image")
    assert meanings["firstorder TotalEnergy"] == (0.125, "1", "wavelet-LH image")
    assert meanings["Mean"] == (-0.1, "1", "log-sigma-1-0-mm-3D image")
    assert len(tumor) == 5                                  # NaN left out
    seg_ref = groups["peri_0-3mm"].referenced_segment[0].ReferencedSOPSequence[0]
    assert seg_ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert int(seg_ref.ReferencedSegmentNumber) == 2


def test_codes_follow_ibsi_and_the_private_scheme():
    # IBSI reference manual codes, written out independently of the table under test
    for key, code in [("original_glcm_Contrast", "ACUI"), ("original_glcm_Idmn", "1QCO"),
                      ("original_glcm_Idn", "NDRX"), ("original_glcm_Idm", "WF0Z"),
                      ("original_firstorder_Entropy", "TLU2"), ("original_ngtdm_Busyness", "NQ30"),
                      ("original_gldm_SmallDependenceEmphasis", "SODN")]:
        assert codes.feature_code(key)[0][:2] == (code, "IBSI"), key
    name, method, unit = codes.feature_code("original_firstorder_Kurtosis")
    assert name[1] == "99H2R" and name[2] == "firstorder Kurtosis"   # pyradiomics' = IBSI's + 3
    assert codes.feature_code("original_shape2D_Perimeter")[2] == ("mm", "millimeter")
    for key in ["wavelet-LH_glszm_SizeZoneNonUniformityNormalized",
                "log-sigma-1-0-mm-3D_firstorder_TotalEnergy", "original_glcm_MCC"]:
        name, method, _ = codes.feature_code(key)
        assert len(name[0]) <= 16 and len(method[0]) <= 16          # a plain Code Value
        assert codes.feature_key(name, method[2]) == key              # and back


def test_the_prediction_group_and_our_reader(tmp_path):
    _, _, sr = _case(tmp_path)
    content = dsr.read_sr(sr)
    expected = {k: v for k, v in FEATURES.items() if np.isfinite(v)}
    assert content.features == expected
    assert content.prediction == {"predicted_class": "HER2-low",
                                  "probabilities": {"zero": 0.25, "HER2-low": 0.75},
                                  "rad_score": 1.5,
                                  "model": {"name": "yin2024", "version": "0.1.0",
                                            "digest": "ab" * 32}}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy is not installed")
def test_dciodvfy_reports_no_error(tmp_path):
    _, _, sr = _case(tmp_path)
    sr.save_as(tmp_path / "sr.dcm")
    res = subprocess.run(["dciodvfy", str(tmp_path / "sr.dcm")], capture_output=True, text=True,
                         timeout=60)
    assert [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")] == []


def test_derived_uids_are_stable_and_valid():
    a, b = dsr.derived_uid("x", 1), dsr.derived_uid("x", 1)
    assert a == b != dsr.derived_uid("x", 2)
    assert a.startswith("2.25.") and len(a) <= 64 and pydicom.uid.UID(a).is_valid


def test_credentials_come_from_the_environment_or_a_file(tmp_path):
    assert dicomweb.auth_from({}) is None
    tok = dicomweb.auth_from({"HER2RADIOMICS_PACS_TOKEN": "t0k"})
    assert (tok.kind, tok.secret) == ("bearer", "t0k") and "t0k" not in repr(tok)
    basic = dicomweb.auth_from({"HER2RADIOMICS_PACS_USER": "u",
                                "HER2RADIOMICS_PACS_PASSWORD": "p"})
    assert (basic.kind, basic.user, basic.secret) == ("basic", "u", "p")
    with pytest.raises(InputError, match="without HER2RADIOMICS_PACS_PASSWORD"):
        dicomweb.auth_from({"HER2RADIOMICS_PACS_USER": "u"})
    f = tmp_path / "cred"
    f.write_text("basic alice:s3cret:with:colons\n")
    assert dicomweb.auth_from({}, f) == dicomweb.Auth("basic", "s3cret:with:colons", "alice")
    f.write_text("password123\n")
    with pytest.raises(InputError, match="one line 'bearer <token>'"):
        dicomweb.auth_from({}, f)


def test_urls_with_credentials_or_other_schemes_are_refused():
    with pytest.raises(InputError, match="credentials in the URL") as e:
        dicomweb.check_url("https://alice:secret@pacs.example.org/dicom-web")
    assert "secret" not in str(e.value)
    with pytest.raises(InputError, match="not an http"):
        dicomweb.check_url("dicom://pacs:104")
    assert dicomweb.check_url("https://pacs.example.org/dicom-web/") == \
        "https://pacs.example.org/dicom-web"


def test_tls_is_verified_by_default(tmp_path):
    pytest.importorskip("dicomweb_client")
    p = dicomweb.Pacs("https://pacs.example.org/dicom-web")
    assert p.client._session.verify is True
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert dicomweb.Pacs("https://pacs.example.org/dicom-web", ca_bundle=ca) \
        .client._session.verify == str(ca)
    bearer = dicomweb.Pacs("https://x/dicom-web", dicomweb.Auth("bearer", "tk"))
    assert bearer.client._session.headers["Authorization"] == "Bearer tk"


def test_the_fast_document_equals_highdicoms_own(tmp_path):
    """build_sr swaps the full content tree into a document built around a light one; the
    result equals the document highdicom's constructor makes from the full tree."""
    import highdicom as hd
    image, seg, fast = _case(tmp_path)
    pred = dsr.ModelPrediction("HER2-low", {"zero": 0.25, "HER2-low": 0.75}, "yin2024", "0.1.0",
                               "ab" * 32, rad_score=1.5)
    full = dsr.measurement_report(image, seg, FEATURES, uid_root=dsr.derived_uid("sr"),
                                  prediction=pred)
    slow = hd.sr.Comprehensive3DSR(
        evidence=[dseg._source_for_highdicom(image), seg], content=full[0],
        series_instance_uid=dsr.derived_uid("t"), series_number=901,
        sop_instance_uid=dsr.derived_uid("sr"), instance_number=1, manufacturer="HER2Radiomics",
        series_description=dsr.SR_SERIES_DESCRIPTION, coding_schemes=dsr.coding_schemes(hd))
    skip = {"ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime",
            "SeriesDate", "SeriesTime", "ContributingEquipmentSequence"}     # times of day
    assert [e.keyword for e in slow] == [e.keyword for e in fast]
    for elem in slow:
        if elem.keyword not in skip:
            assert fast[elem.tag] == elem, elem.keyword
