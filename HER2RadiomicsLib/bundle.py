"""Model bundles: everything needed to predict one new patient exactly as in training.

A bundle is one zip file holding

* ``bundle.json`` — task and class labels, decision threshold, the ordered input columns, the
  params YAML text and its sha256, ring specs, regions, known sites, clinical columns,
  training summary and metrics, versions of Python/numpy/scikit-learn/pyradiomics/
  HER2RadiomicsLib, and the sha256 of the model file;
* ``model.skops`` — the fitted pipeline (and nomogram) in skops' format, which loads without
  running code: only types from an allow-list (scikit-learn, imbalanced-learn, numpy, scipy,
  HER2RadiomicsLib) are accepted; anything else is refused unless the user trusts the file.

``format="joblib"`` (a pickle: the Slicer community's usual format) is supported only for
bundles the user explicitly trusts (``trust=True``, CLI ``--trust``), and its sha256 is checked
against ``bundle.json`` first.  A pickle runs code when loaded, so a default load never opens
one.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from .errors import InputError, ModelError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ALLOWED_PREFIXES = ("sklearn.", "imblearn.", "numpy.", "scipy.", "HER2RadiomicsLib.",
                    "builtins.", "collections.")


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def versions() -> dict:
    import numpy
    import sklearn
    from . import __version__
    try:
        import radiomics
        rv = radiomics.__version__
    except ImportError:  # prediction from a feature table does not need pyradiomics
        rv = None
    return {"python": platform.python_version(), "numpy": numpy.__version__,
            "scikit-learn": sklearn.__version__, "pyradiomics": rv,
            "HER2RadiomicsLib": __version__}


def save_bundle(path, model: dict, meta: dict, fmt: str = "skops") -> Path:
    """Write a bundle zip atomically.

    Parameters
    ----------
    path : path
    model : dict
        ``{"pipeline": fitted estimator, "nomogram": NomogramModel or None}``.
    meta : dict
        JSON-serialisable metadata (see module docstring); versions and hashes are added.
    fmt : {"skops", "joblib"}
    """
    from .io import atomic_write_bytes
    if fmt == "skops":
        import skops.io as sio
        blob = sio.dumps(model)
        name = "model.skops"
    elif fmt == "joblib":
        import joblib
        buf = io.BytesIO()
        joblib.dump(model, buf)
        blob = buf.getvalue()
        name = "model.joblib"
    else:
        raise InputError(f"bundle format {fmt!r}: skops or joblib")
    doc = {**meta, "format_version": FORMAT_VERSION, "model_file": name, "model_format": fmt,
           "model_sha256": _sha(blob), "versions": versions(),
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bundle.json", json.dumps(doc, indent=2, default=str))
        z.writestr(name, blob)
    return atomic_write_bytes(path, buf.getvalue())


class Bundle:
    """A loaded bundle: ``meta`` (dict), ``pipeline``, ``nomogram`` and version ``warnings``."""

    def __init__(self, meta, model, path):
        self.meta = meta
        self.pipeline = model["pipeline"]
        self.nomogram = model.get("nomogram")
        self.path = str(path)
        self.warnings = version_warnings(meta.get("versions", {}))

    @property
    def classes(self):
        return self.meta["classes"]

    @property
    def features(self):
        return self.meta["input_columns"]


def version_warnings(saved: dict) -> list:
    """Human messages for every version that differs between training and now."""
    now = versions()
    out = []
    for k, v in saved.items():
        if k == "python" or v is None or now.get(k) is None:
            continue
        if str(now[k]) != str(v):
            out.append(f"{k} {now[k]} differs from the bundle's {v}: predictions may differ "
                       "slightly; retrain or pin the version for exact reproduction")
    return out


def read_meta(path) -> dict:
    """Only the bundle's JSON metadata (no model is loaded)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: bundle not found")
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("bundle.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ModelError(f"{path}: not a HER2Radiomics bundle ({exc})") from None


def load_bundle(path, trust: bool = False) -> Bundle:
    """Load a bundle safely.

    Parameters
    ----------
    trust : bool
        Allow types outside the allow-list in a skops file, and allow joblib (pickle) bundles.
        Only for files from a source you trust: a pickle can run arbitrary code.

    Raises
    ------
    ModelError
        Not a bundle, hash mismatch, untrusted content, unreadable model.
    """
    path = Path(path)
    meta = read_meta(path)
    name = meta.get("model_file")
    with zipfile.ZipFile(path) as z:
        try:
            blob = z.read(name)
        except KeyError:
            raise ModelError(f"{path}: model file {name!r} missing from the bundle") from None
    if _sha(blob) != meta.get("model_sha256"):
        raise ModelError(f"{path}: model sha256 does not match bundle.json (corrupt or "
                         "tampered bundle)")
    fmt = meta.get("model_format")
    if fmt == "skops":
        import skops.io as sio
        try:
            untrusted = sio.get_untrusted_types(data=blob)
        except Exception as exc:  # skops raises several types for a malformed file
            raise ModelError(f"{path}: unreadable skops model ({exc})") from None
        bad = [t for t in untrusted if not t.startswith(ALLOWED_PREFIXES)]
        if bad and not trust:
            raise ModelError(f"{path}: the model contains types outside the allow-list "
                             f"({', '.join(bad[:5])}); load it with --trust only if you trust "
                             "its source")
        try:
            model = sio.loads(blob, trusted=untrusted)
        except Exception as exc:
            raise ModelError(f"{path}: cannot load the model ({exc})") from None
    elif fmt == "joblib":
        if not trust:
            raise ModelError(f"{path}: joblib (pickle) bundles run code when loaded; pass "
                             "--trust to load one from a source you trust")
        import joblib
        model = joblib.load(io.BytesIO(blob))
    else:
        raise ModelError(f"{path}: unknown model format {fmt!r}")
    b = Bundle(meta, model, path)
    for w in b.warnings:
        log.warning("%s: %s", path, w)
    return b
