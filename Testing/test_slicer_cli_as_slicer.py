"""The scripted CLI run exactly as Slicer runs it (issue 26, D1-D3, D5).

What Slicer does, read in its sources (``Base/Logic/vtkSlicerCLIModuleLogic.cxx``, 5.8 to
5.12; docs/slicer.md, "Scripted CLI"):

* the command line is ``python-real HER2RadiomicsCLI.py`` and then the parameters in the
  XML's order: integers and enumerations always with their value, strings, files and vectors
  only when not empty, booleans as a bare flag when true, image and table nodes as temporary
  files named ``<tmp>/<pid>_<nodeID>.<ext>`` with every digit written as a letter - the same
  name for the same node on every run in a session;
* the output tables are read back only when the process exits 0; otherwise they are discarded;
* anything on stderr is logged as an error, whatever the exit code.

Each test builds that command line from the XML, runs it as a separate process and reads the
outputs back only as Slicer would.
"""
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "HER2RadiomicsCLI" / "HER2RadiomicsCLI.py"
FILE_LIKE = {"string", "file", "directory", "integer-vector", "float-vector", "double-vector",
             "string-vector"}


def slicer_temp_name(tmp: Path, node_id: str, ext: str, pid: int = 40213) -> Path:
    """``<tmp>/<pid>_<nodeID><ext>`` with digits as letters (vtkSlicerCLIModuleLogic's
    ConstructTemporaryFileName and DigitsToCharacters)."""
    letters = str.maketrans("0123456789", "ABCDEFGHIJ")
    return tmp / f"{str(pid).translate(letters)}_{node_id.translate(letters)}{ext}"


def slicer_argv(values: dict) -> list:
    """The command line Slicer builds for these parameter values (the XML's order)."""
    argv = [sys.executable, str(SCRIPT)]
    root = ET.parse(SCRIPT.with_suffix(".xml")).getroot()
    seen = set()
    for group in root.findall("parameters"):
        for p in group:
            if p.tag in ("label", "description"):
                continue
            name, flag = p.findtext("name"), "--" + p.findtext("longflag")
            seen.add(name)
            value = values.get(name, p.findtext("default") or "")
            if p.tag == "boolean":
                if str(value).lower() == "true" or value is True:
                    argv.append(flag)
            elif p.tag in FILE_LIKE:
                if str(value) != "":
                    argv += [flag, str(value)]
            elif p.tag in ("image", "table"):
                if name in values:                     # a node is selected: its temp file
                    argv += [flag, str(values[name])]
            else:                                      # integer, enumeration, float: always
                argv += [flag, str(value)]
    assert set(values) <= seen, f"not parameters of the XML: {set(values) - seen}"
    return argv


def run_as_slicer(values: dict, outputs: dict):
    """Run the CLI; return (exit code, stderr, {output: DataFrame or None}) where outputs are
    read only after exit 0, as Slicer does."""
    r = subprocess.run(slicer_argv(values), capture_output=True, text=True, timeout=600,
                       cwd=Path(values.get("outputTable", ROOT)).parent)
    tables = {}
    for name, path in outputs.items():
        tables[name] = (pd.read_csv(path, sep="\t", dtype={"case_id": str})
                        if r.returncode == 0 and Path(path).exists() else None)
    return r.returncode, r.stderr, tables


def _features(image, mask, rings=(3.0,), params="cui2023"):
    from HER2RadiomicsLib.extraction.features import FeatureExtractor
    from HER2RadiomicsLib.imaging.io import load_case
    from HER2RadiomicsLib.imaging.rings import build_regions
    loaded, m = load_case(image, mask)
    regs = build_regions(loaded.image, m, list(rings), annuli=False)
    return FeatureExtractor(params).extract(loaded.image, regs.masks)[0]


@pytest.fixture
def slicer_tmp(tmp_path):
    d = tmp_path / "Slicer-root"
    d.mkdir()
    return d


def test_a_cohort_with_bad_cases_returns_its_good_rows_and_a_failures_table(cohort, slicer_tmp,
                                                                           tmp_path):
    rows = pd.read_csv(cohort / "cohort.csv").iloc[:3]
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    man = pd.DataFrame({
        "case_id": ["A", "B-missing", "C", "D-corrupt"],
        "image": [str(cohort / rows.image[0]), str(tmp_path / "nope.dcm"),
                  str(cohort / rows.image[2]), str(cohort / rows.image[1])],
        "mask": [str(cohort / rows["mask"][0]), str(cohort / rows["mask"][1]),
                 str(cohort / rows["mask"][2]), str(tmp_path / "corrupt.png")]})
    man.to_csv(tmp_path / "m.csv", index=False)
    out = slicer_temp_name(slicer_tmp, "vtkMRMLTableNode4", ".tsv")
    err = slicer_temp_name(slicer_tmp, "vtkMRMLTableNode5", ".tsv")
    rc, stderr, t = run_as_slicer({"manifest": tmp_path / "m.csv", "preset": "cui2023",
                                   "rings": "3", "outputTable": out, "outputErrors": err},
                                  {"table": out, "errors": err})
    assert rc == 0 and stderr == ""
    assert t["table"].case_id.tolist() == ["A", "C"]
    for cid, i in (("A", 0), ("C", 2)):
        ref = _features(cohort / rows.image[i], cohort / rows["mask"][i])
        got = t["table"].set_index("case_id").loc[cid, list(ref)].to_numpy(float)
        assert np.allclose(got, list(ref.values()), rtol=1e-9, equal_nan=True)
    e = t["errors"].set_index("case_id")
    assert e.index.tolist() == ["B-missing", "D-corrupt"]
    assert e.loc["B-missing", "file"] == str(tmp_path / "nope.dcm")
    assert e.loc["D-corrupt", "file"] == str(tmp_path / "corrupt.png")
    assert "not found" in e.loc["B-missing", "error"]


def test_a_second_cohort_into_the_same_temporary_name_gets_its_own_features(cohort, slicer_tmp,
                                                                           tmp_path):
    """Slicer reuses <pid>_<nodeID>.tsv for every run into one table node: the second cohort,
    with the same case ids, must not get the first one's features or CNN masks."""
    rows = pd.read_csv(cohort / "cohort.csv")
    out = slicer_temp_name(slicer_tmp, "vtkMRMLTableNode7", ".tsv")
    got = []
    for pick in ([0, 1], [2, 3]):
        man = pd.DataFrame({"case_id": ["case1", "case2"],
                            "image": [str(cohort / rows.image[i]) for i in pick],
                            "mask": [str(cohort / rows["mask"][pick[0]]), ""]})  # 2nd: CNN
        man.to_csv(tmp_path / "m.csv", index=False)
        rc, stderr, t = run_as_slicer({"manifest": tmp_path / "m.csv", "preset": "cui2023",
                                       "rings": "3", "outputTable": out}, {"table": out})
        assert rc == 0 and stderr == ""
        got.append(t["table"].set_index("case_id"))
    ref = _features(cohort / rows.image[2], cohort / rows["mask"][2])
    assert np.allclose(got[1].loc["case1", list(ref)].to_numpy(float), list(ref.values()),
                       rtol=1e-9, equal_nan=True)
    col = "tumor__original_firstorder_Mean"
    assert got[0].loc["case2", col] != got[1].loc["case2", col]    # a new CNN mask, new image
    assert not [p for p in slicer_tmp.iterdir() if p != out]        # nothing left behind


def test_nothing_succeeds_exit_1_one_line_and_slicer_reads_nothing(slicer_tmp, tmp_path):
    pd.DataFrame({"case_id": ["X"], "image": [str(tmp_path / "gone.png")], "mask": [""]}).to_csv(
        tmp_path / "m.csv", index=False)
    out = slicer_temp_name(slicer_tmp, "vtkMRMLTableNode1", ".tsv")
    rc, stderr, t = run_as_slicer({"manifest": tmp_path / "m.csv", "outputTable": out},
                                  {"table": out})
    assert rc == 1 and t["table"] is None
    assert len(stderr.strip().splitlines()) == 1 and "no case succeeded" in stderr


def test_a_colour_volume_as_slicer_writes_it_is_read_as_grey(cohort, slicer_tmp, tmp_path):
    """An RGB image loads in Slicer as a vector volume and reaches the CLI as an uncompressed
    one-slice 3D NRRD with three components; the CLI converts it with the BT.601 rule."""
    from HER2RadiomicsLib.imaging.io import GREY_FORMULA, read_image
    row = pd.read_csv(cohort / "cohort.csv").iloc[0]
    grey = read_image(cohort / row.image).image
    g = sitk.GetArrayFromImage(grey)
    rgb = np.stack([np.clip(g * 1.2, 0, 255), g, np.clip(g * 0.7, 0, 255)], -1).astype(np.uint8)
    vol = sitk.GetImageFromArray(rgb[None], isVector=True)
    vol.SetSpacing(grey.GetSpacing() + (1.0,))
    vol.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    vpath = slicer_temp_name(slicer_tmp, "vtkMRMLVectorVolumeNode2", ".nrrd")
    sitk.WriteImage(vol, str(vpath), False)
    mask = sitk.ReadImage(str(cohort / row["mask"]))
    m3 = sitk.JoinSeries(sitk.Cast(mask > 0, sitk.sitkUInt8))
    m3.CopyInformation(vol)
    lpath = slicer_temp_name(slicer_tmp, "vtkMRMLLabelMapVolumeNode3", ".nrrd")
    sitk.WriteImage(m3, str(lpath), False)
    out = slicer_temp_name(slicer_tmp, "vtkMRMLTableNode4", ".tsv")
    rc, stderr, t = run_as_slicer({"inputVolume": vpath, "inputLabel": lpath, "caseId": "RGB",
                                   "preset": "cui2023", "rings": "3", "outputTable": out},
                                  {"table": out})
    assert rc == 0 and stderr == ""
    assert t["table"].loc[0, "case_id"] == "RGB"
    # the reference: the same pixels converted by hand with the documented weights
    assert "0.299 R + 0.587 G + 0.114 B" in GREY_FORMULA
    ref_arr = (rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(
        np.float32)
    ref_img = sitk.GetImageFromArray(ref_arr)
    ref_img.SetSpacing(grey.GetSpacing())
    p_img, p_mask = tmp_path / "ref.nrrd", tmp_path / "ref_mask.nrrd"
    sitk.WriteImage(ref_img, str(p_img))
    mk = sitk.Cast(mask > 0, sitk.sitkUInt8)
    mk.CopyInformation(ref_img)
    sitk.WriteImage(mk, str(p_mask))
    ref = _features(p_img, p_mask)
    got = t["table"].loc[0, list(ref)].to_numpy(float)
    assert np.allclose(got, list(ref.values()), rtol=1e-6, equal_nan=True)


def test_the_xml_accepts_colour_volumes_and_declares_the_failures_table():
    root = ET.parse(SCRIPT.with_suffix(".xml")).getroot()
    params = {p.findtext("name"): p for g in root.findall("parameters") for p in g
              if p.tag not in ("label", "description")}
    # type="any" is the only image type whose selector lists vector volumes (Slicer's
    # qSlicerCLIModuleUIHelper); "scalar" hides them
    assert params["inputVolume"].get("type") == "any"
    assert params["outputErrors"].tag == "table"
    assert params["outputErrors"].findtext("channel") == "output"
    assert params["resume"].findtext("default") == "false"
    assert params["outputLabel"].get("reference") == "inputVolume"


def test_outputs_that_are_inputs_are_refused(cohort, tmp_path):
    row = pd.read_csv(cohort / "cohort.csv").iloc[0]
    vol, lab = tmp_path / "vol.nrrd", tmp_path / "lab.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(cohort / row.image)), str(vol))
    sitk.WriteImage(sitk.ReadImage(str(cohort / row["mask"])), str(lab))
    man = tmp_path / "m.csv"
    pd.DataFrame({"case_id": ["A"], "image": [str(vol)], "mask": [str(lab)]}).to_csv(
        man, index=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for values in ({"manifest": man, "outputTable": man},
                   {"manifest": man, "outputTable": tmp_path / "o.tsv", "outputErrors": lab},
                   {"inputVolume": vol, "inputLabel": lab, "spacingMm": "0.12,0.12",
                    "outputLabel": vol},
                   {"inputVolume": vol, "inputLabel": lab, "spacingMm": "0.12,0.12",
                    "outputTable": tmp_path / "t.tsv", "outputMask": lab}):
        r = subprocess.run(slicer_argv(values), capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (values, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "also an input" in r.stderr
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_interrupted_cohort_returns_no_table(cohort, slicer_tmp, tmp_path):
    """Ctrl-C or a kill (Slicer's Cancel) in the middle of a cohort: exit 130, one line, and
    the table of the previous run into the same name is not replaced by a partial one."""
    import signal
    import time
    rows = pd.read_csv(cohort / "cohort.csv")
    man = tmp_path / "m.csv"
    pd.DataFrame({"case_id": rows.case_id, "image": [str(cohort / p) for p in rows.image],
                  "mask": [str(cohort / p) for p in rows["mask"]]}).to_csv(man, index=False)
    out = slicer_temp_name(slicer_tmp, "vtkMRMLTableNode2", ".tsv")
    values = {"manifest": man, "preset": "default", "rings": "3,5,8", "outputTable": out}
    assert run_as_slicer({**values, "preset": "cui2023", "rings": "3"}, {"t": out})[0] == 0
    previous = out.read_bytes()
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(slicer_argv(values), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        seen = ""
        while "<filter-progress>0.3" not in seen and proc.poll() is None:
            seen += proc.stdout.readline()                  # extraction has started
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert len(err.strip().splitlines()) == 1 and "interrupted" in err
        assert out.read_bytes() == previous


def test_a_row_the_bundle_cannot_predict_fails_alone(cohort, slicer_tmp, tmp_path):
    """The shipped bundle harmonises sites A and B: a row of site Z is that row's failure;
    the other rows are predicted (the whole cohort failed before)."""
    rows = pd.read_csv(cohort / "cohort.csv").query("site in ['A', 'B']").iloc[:3].copy()
    rows["image"] = [str(cohort / p) for p in rows.image]
    rows["mask"] = [str(cohort / p) for p in rows["mask"]]
    rows.iloc[1, rows.columns.get_loc("site")] = "Z"
    man = tmp_path / "m.csv"
    rows.drop(columns=["image_png"]).to_csv(man, index=False)
    out = slicer_temp_name(slicer_tmp, "vtkMRMLTableNode3", ".tsv")
    err = slicer_temp_name(slicer_tmp, "vtkMRMLTableNode4", ".tsv")
    bundle = ROOT / "HER2Radiomics" / "Resources" / "Testing" / "model_bundle.zip"
    rc, stderr, t = run_as_slicer({"manifest": man, "bundle": bundle, "outputTable": out,
                                   "outputErrors": err}, {"table": out, "errors": err})
    assert rc == 0 and stderr == ""
    good = [rows.case_id.iloc[0], rows.case_id.iloc[2]]
    assert t["table"].case_id.tolist() == good
    assert t["table"]["prediction_predicted_class"].notna().all()
    assert t["errors"].case_id.tolist() == [rows.case_id.iloc[1]]
    assert "site" in t["errors"].error.iloc[0]


def test_formula_cells_in_the_tables_are_quoted(cohort, slicer_tmp):
    row = pd.read_csv(cohort / "cohort.csv").iloc[0]
    out = slicer_temp_name(slicer_tmp, "vtkMRMLTableNode5", ".tsv")
    rc, stderr, t = run_as_slicer({"inputVolume": cohort / row.image,
                                   "inputLabel": cohort / row["mask"], "preset": "cui2023",
                                   "rings": "3", "caseId": '=HYPERLINK("http://x","y")',
                                   "outputTable": out}, {"table": out})
    assert rc == 0, stderr
    assert t["table"].case_id.iloc[0] == '\'=HYPERLINK("http://x","y")'
