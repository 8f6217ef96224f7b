"""HER2RadiomicsLib: breast-ultrasound radiomics for HER2 status (research use only).

Plain Python (SimpleITK, scikit-learn, torch; pyradiomics as the optional reference engine);
never imports Slicer, Qt, VTK or CTK, so the same code serves the Slicer module, the command
line and the tests.

This file is the library's public face: the operations a user, a script or the Slicer layer
needs, importable from the package itself. Each name is imported when first used (PEP 562), so
``import HER2RadiomicsLib`` stays instant and needs nothing but the standard library (the
Slicer module imports it before it installs numpy and friends).

Example
-------
>>> import HER2RadiomicsLib as h2r                                          # doctest: +SKIP
>>> bundle = h2r.load_bundle("model_bundle.zip")                            # doctest: +SKIP
>>> loaded = h2r.read_image("us.dcm")                                       # doctest: +SKIP
>>> mask = h2r.auto_mask(loaded).mask                      # the shipped CNN  # doctest: +SKIP
>>> result = h2r.predict_case(bundle, loaded, mask, site="A")               # doctest: +SKIP
>>> h2r.write_case_report(bundle, result, "case.html")    # draws, never extracts  # doctest: +SKIP
"""
import importlib

__version__ = "0.1.0"

#: public name -> the module (under this package) that defines it, grouped by floor
_FACE = {
    # errors (every floor raises them; the Slicer layer shows their one line)
    "HER2Error": "errors", "InputError": "errors", "Cancelled": "errors",
    # imaging: read, convert, write; peritumoral regions
    "LoadedImage": "imaging.io", "read_image": "imaging.io", "load_case": "imaging.io",
    "write_image": "imaging.io", "to_grey": "imaging.io", "companion_files": "imaging.io",
    "atomic_write_text": "imaging.io",
    "build_regions": "imaging.rings", "parse_rings": "imaging.rings",
    "encode_region_bits": "imaging.rings", "decode_region_bits": "imaging.rings",
    "generate_cohort": "imaging.synth",
    # extraction: one case, or a cohort
    "FeatureExtractor": "extraction.features", "load_params": "extraction.features",
    "ExtractConfig": "extraction.batch", "read_manifest": "extraction.batch",
    "run_batch": "extraction.batch", "BatchOptions": "extraction.batch",
    "json_default": "extraction.batch",
    # segmentation: the CNN auto-mask
    "get_segmenter": "segmentation.inference", "auto_mask": "segmentation.inference",
    "check_ultrasound": "segmentation.modality", "DEFAULT_MODEL": "segmentation.inference",
    "cnn_masks": "segmentation.cohort",
    # readers: contour agreement and the reader study
    "compare_masks": "readers.metrics", "run_reader_study": "readers.study",
    "ReaderStudyConfig": "readers.study",
    # modelling: bundles, prediction, the study run
    "load_bundle": "modelling.bundle",
    "predict_case": "modelling.predict", "CasePrediction": "modelling.predict",
    "ReadOptions": "modelling.predict", "Prediction": "modelling.predict",
    "predict_rows": "modelling.predict", "parse_clinical": "modelling.clinical",
    "bundle_params_file": "modelling.predict",
    "load_recipe": "modelling.recipes", "StudyRun": "modelling.study",
    "StudyOptions": "modelling.study",
    # reports: draw a prediction
    "write_case_report": "reports.case", "task_text": "reports.case",
    "render_study": "reports.study", "render_reader_study": "reports.reader_study",
    # outputs: safe files for spreadsheets, no output over an input
    "refuse_overlaps": "outputs", "spreadsheet_safe_frame": "outputs",
}
#: public names whose object has another name in its module
_RENAMED = {"extract": ("extraction.batch", "process_case"),
            "run_study": ("modelling.study", "run")}
#: modules on the face (the dependency list must import with the standard library alone)
_MODULES = {"requirements": "requirements"}

__all__ = sorted([*_FACE, *_RENAMED, *_MODULES, "__version__"])


def __getattr__(name):
    # not cached in this module's namespace: a test that replaces the object in its own
    # module (a stand-in CNN) is seen here too; the lookup is a dict hit in sys.modules
    if name in _FACE:
        return getattr(importlib.import_module(f".{_FACE[name]}", __name__), name)
    if name in _RENAMED:
        module, attr = _RENAMED[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    if name in _MODULES:
        return importlib.import_module(f".{_MODULES[name]}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
