"""The library's public face (``HER2RadiomicsLib/__init__.py``): instant to import, every
exported name resolves, and the names are the ones the Slicer layer and users rely on."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: exported by name before its object exists: the study split (issue 29, item 1) adds StudyRun
PENDING = {"StudyRun"}


def test_import_needs_only_the_standard_library():
    """The Slicer module imports the package before numpy and friends are installed."""
    code = ("import sys, HER2RadiomicsLib as h; "
            "heavy = {'numpy', 'pandas', 'SimpleITK', 'scipy', 'sklearn', 'torch'} & "
            "set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_exported_name_resolves():
    import HER2RadiomicsLib as h2r
    missing = [n for n in h2r.__all__ if n not in PENDING and not hasattr(h2r, n)]
    assert missing == []
    assert set(dir(h2r)) == set(h2r.__all__)
    for name in ("load_case", "auto_mask", "get_segmenter", "build_regions", "extract",
                 "load_bundle", "predict_case", "write_case_report", "run_reader_study",
                 "run_study", "StudyRun"):
        assert name in h2r.__all__, name
    from HER2RadiomicsLib.modelling import study
    assert h2r.run_study is study.run
    try:
        _ = h2r.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


def test_a_replaced_object_is_seen_through_the_face(monkeypatch):
    """Names are looked up at each use, not copied: a test's stand-in CNN reaches the Slicer
    layer, which imports through the face."""
    import HER2RadiomicsLib as h2r
    from HER2RadiomicsLib.segmentation import inference
    stand_in = object()
    monkeypatch.setattr(inference, "get_segmenter", lambda *a, **k: stand_in)
    assert h2r.get_segmenter() is stand_in
