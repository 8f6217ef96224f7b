"""Model bundles: everything needed to predict one new patient exactly as in training.

A bundle is one zip file holding exactly two entries:

* ``bundle.json`` — task and class labels, decision threshold, the ordered input columns, the
  params YAML text and its sha256, ring specs, regions, known sites, clinical columns, the
  feature engine, the training pixel spacing and units, the training ranges of the model's
  inputs and Rad-score, metrics, versions, the sha256 of the model file, and an ``integrity``
  record: one sha256 per metadata field plus one digest over all of them;
* ``model.skops`` — the fitted pipeline (and nomogram) in skops' format, which loads without
  running code: only the exact type names in :data:`ALLOWED_TYPES` (what our own recipes'
  pipelines contain, beyond skops' own safe defaults) are accepted; anything else is refused,
  by name, unless the user trusts the file.

What a load checks, before anything is read into memory or constructed:

* the archive holds only ``bundle.json`` and the model file, with plain names (no folders,
  ``..`` or absolute paths), each under its size cap (:data:`MAX_META_BYTES`,
  :data:`MAX_MODEL_BYTES`) and, for the skops model's own inner archive,
  :data:`MAX_MODEL_UNCOMPRESSED_BYTES` and :data:`MAX_INNER_ENTRIES`;
* no entry inflates more than :data:`MAX_COMPRESSION_RATIO` times its stored size (a zip
  bomb is refused before it is inflated), and an entry that does not decompress is refused
  as corrupt;
* JSON nesting stays under :data:`MAX_NESTING` (deeper documents are refused instead of
  exhausting Python's recursion limit);
* ``format_version`` is not newer than this library's :data:`FORMAT_VERSION`;
* the integrity digest matches: any edit of a field that changes a prediction (model file,
  params YAML, threshold, rings, classes, feature order, nomogram, engine, ...) is refused as
  "tampered or corrupt bundle: <field>".

and, once the digest holds (see :mod:`.bundle_checks`):

* the skops object graph needs at most :data:`~.bundle_checks.MAX_SCHEMA_NODES` audit steps
  and nests at most :data:`~.bundle_checks.MAX_SCHEMA_DEPTH` levels, references followed
  (skops' own audit follows every reference again: exponential on a small crafted file);
* auditing and building the model finish within :data:`LOAD_TIMEOUT_S` seconds;
* every decision tree's indices and shapes are ones scikit-learn can follow safely;
* the metadata that drives decisions is possible: threshold in [0, 1], the task's and the
  model's classes, finite training ranges, positive training spacings, research use only.

The digest detects corruption and casual edits; it is not a signature (whoever can write the
file can recompute it). The allow-list is what keeps a malicious file from running code; the
checks above keep it from hanging or crashing the process, or from deciding with values no
training run can produce.

``format="joblib"`` (a pickle, the Slicer community's usual format) is supported only for
bundles the user explicitly trusts (``trust=True``, CLI ``--trust``): a pickle runs code when
loaded, so a default load never opens one, whatever the entry is called.
"""
from __future__ import annotations

import hashlib
import io
import json
import platform
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError, ModelError, one_line
from .bundle_checks import check_meta, check_schema_graph, check_trees
# moved to .bundle_compat when this file was split by job; imported from here by others
from .bundle_compat import (  # noqa: F401
    LEGACY_MODULES, LEGACY_TYPES, _for_older_sklearn, _legacy_module_aliases, current_type_name)

# 2: integrity digest, engine, training spacing and input ranges; 1 had no digest.
FORMAT_VERSION = 2
MODEL_FORMATS = {"skops": "model.skops", "joblib": "model.joblib"}

# Size caps, checked on the zip's directory before any entry is read. Our largest bundles
# (300-tree random forest on 1,500 features) are ~20 MB; the caps leave ten-fold room.
MAX_META_BYTES = 16 * 2**20
MAX_MODEL_BYTES = 256 * 2**20
MAX_MODEL_UNCOMPRESSED_BYTES = 512 * 2**20
MAX_INNER_ENTRIES = 20_000
# Our skops schemas nest ~15 levels; 100 is far beyond any pipeline and far below the ~1,000
# at which Python's json parser overflows its recursion limit.
MAX_NESTING = 100
# Deflate can shrink a run of zeros ~1,000-fold; our models shrink ~20-fold (numbers and JSON).
# An entry above 1 MiB (smaller ones cost nothing to inflate) that claims more than 200-fold
# is a zip bomb, refused before it is inflated.
MAX_COMPRESSION_RATIO = 200
RATIO_MIN_BYTES = 2**20
# Auditing and building our largest model (300-tree forest, 7 MB) takes 0.2 s; a minute is
# far beyond any genuine bundle and bounds what a crafted one can cost.
LOAD_TIMEOUT_S = 60
# skops audits and builds recursively: the loading thread gets a stack that the depth cap
# above cannot exhaust on any platform (macOS gives threads 512 kB by default).
_LOAD_STACK_BYTES = 64 * 2**20

# Exact type names our pipelines add to skops' own default-trusted set (scikit-learn
# estimators, numpy arrays and dtypes, plain containers). Derived from what every shipped
# recipe produces with each of the seven classifiers, tuned or not, flat or hierarchical
# (Testing/test_bundle_allowlist.py rebuilds them and checks the list covers them and holds
# nothing that can run code, open files or import modules).
ALLOWED_TYPES = frozenset({
    "HER2RadiomicsLib.modelling.harmonization.ComBat",
    "HER2RadiomicsLib.modelling.lasso.LassoSelector",
    "HER2RadiomicsLib.modelling.transformers.ColumnSelector",
    "HER2RadiomicsLib.modelling.transformers.CorrelationFilter",
    "HER2RadiomicsLib.modelling.transformers.MedianImputer",
    "HER2RadiomicsLib.modelling.transformers.StableFeatureFilter",
    "HER2RadiomicsLib.modelling.transformers.URFModule",
    "HER2RadiomicsLib.modelling.transformers.UnivariateFilter",
    "HER2RadiomicsLib.modelling.transformers.VarianceFilter",
    "HER2RadiomicsLib.modelling.nomogram.NomogramModel",
    "HER2RadiomicsLib.modelling.pipelines.HierarchicalClassifier",
    "imblearn.over_sampling._smote.base.SMOTE",
    "imblearn.pipeline.Pipeline",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._ranking.roc_auc_score",      # GridSearchCV's scorer (nested tuning)
    "sklearn.metrics._scorer._Scorer",
    "sklearn.model_selection._split.StratifiedKFold",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.tree._tree.Tree",
})


# The metadata entry that holds the per-field hashes and the digest (every other entry,
# bookkeeping such as "created" included, is covered by them).
_INTEGRITY_KEY = "integrity"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def canonical_json(value) -> bytes:
    """The one canonical byte form of a JSON value: sorted keys, no spaces, ASCII."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=True).encode("ascii")


def integrity_record(doc: dict) -> dict:
    """Per-field sha256 and one digest over all fields (the ``integrity`` entry itself aside)."""
    fields = {k: _sha(canonical_json(v)) for k, v in sorted(doc.items()) if k != _INTEGRITY_KEY}
    return {"algorithm": "sha256/canonical-json", "fields": fields,
            "digest": _sha(canonical_json(fields))}


def versions() -> dict:
    import numpy
    import sklearn
    from .. import __version__
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
        JSON-serialisable metadata (see module docstring); versions, hashes and the integrity
        record are added.
    fmt : {"skops", "joblib"}
    """
    from ..imaging.io import atomic_write_bytes
    if fmt == "skops":
        import skops.io as sio
        blob = sio.dumps(model)
    elif fmt == "joblib":
        import joblib
        buf = io.BytesIO()
        joblib.dump(model, buf)
        blob = buf.getvalue()
    else:
        raise InputError(f"bundle format {fmt!r}: skops or joblib")
    name = MODEL_FORMATS[fmt]
    # every bundle this library writes is for research use only (checked at load)
    doc = {**meta, "research_use_only": True, "format_version": FORMAT_VERSION,
           "model_file": name, "model_format": fmt,
           "model_sha256": _sha(blob), "versions": versions(),
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    # hash what a reader will parse: the JSON round trip turns numpy scalars, tuples and
    # other objects into the plain values the digest is later recomputed from
    from ..extraction.batch import json_default
    doc = json.loads(json.dumps(doc, default=json_default))
    doc[_INTEGRITY_KEY] = integrity_record(doc)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bundle.json", json.dumps(doc, indent=2))
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


# -- reading, with every check done before anything large is read -------------------------------

def json_nesting(text: str) -> int:
    """Deepest ``[``/``{`` nesting of a JSON text, found without parsing (no recursion)."""
    depth = deepest = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _safe_json(raw: bytes, what: str, path) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"{path}: {what} is not UTF-8 text (corrupt bundle)") from None
    if json_nesting(text) > MAX_NESTING:
        raise ModelError(f"{path}: {what} nests deeper than {MAX_NESTING} levels (refused)")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ModelError(f"{path}: {what} is not valid JSON ({one_line(exc)})") from None


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..") \
        and ":" not in name and not name.startswith(".")


def _read_entry(z: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, path="bundle") -> bytes:
    # the declared size was checked against the cap; read at most cap + 1 bytes anyway so
    # that a lying header cannot make us inflate more than the cap
    _check_ratio(info, path)
    try:
        with z.open(info) as fh:
            data = fh.read(cap + 1)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 -- zlib.error, BadZipFile (CRC), encrypted, unknown method, ...
        kind = type(exc).__name__ if type(exc).__module__ == "builtins" else \
            f"{type(exc).__module__}.{type(exc).__name__}"
        raise ModelError(f"{path}: corrupt bundle: entry {info.filename!r} does not "
                         f"decompress ({kind}: {exc})") from None
    if len(data) > cap:
        raise ModelError(f"{path}: refused: entry {info.filename!r} inflates beyond its "
                         f"{cap >> 20} MiB cap")
    return data


def _check_ratio(info: zipfile.ZipInfo, path) -> None:
    if info.file_size > RATIO_MIN_BYTES and \
            info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
        raise ModelError(f"{path}: refused: entry {info.filename!r} would inflate "
                         f"{info.compress_size:,} bytes to {info.file_size:,} (more than "
                         f"{MAX_COMPRESSION_RATIO}-fold: a zip bomb?)")


def _open_zip(path):
    try:
        z = zipfile.ZipFile(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the bundle ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 -- BadZipFile, and whatever a damaged directory makes zipfile raise
        raise ModelError(f"{path}: not a HER2Radiomics bundle ({exc or 'empty file'})") \
            from None
    return z


def read_meta(path, check: bool = True) -> dict:
    """The bundle's JSON metadata, checked (entries, sizes, nesting, version, digest).

    No model is loaded. ``check=False`` skips the digest and version checks (for tools that
    inspect damaged bundles); the structural limits always apply.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: bundle not found")
    with _open_zip(path) as z:
        meta, _ = _checked_entries(z, path)
        raw = _read_entry(z, meta, MAX_META_BYTES, path)
    doc = _safe_json(raw, "bundle.json", path)
    if not isinstance(doc, dict):
        raise ModelError(f"{path}: bundle.json is not an object (corrupt bundle)")
    if check:
        _check_version_and_digest(doc, path)
    return doc


def _checked_entries(z: zipfile.ZipFile, path):
    """The ``bundle.json`` and model entries, after the structural checks."""
    infos = z.infolist()
    names = [i.filename for i in infos]
    bad = [n for n in names if not _plain_name(n)]
    if bad:
        raise ModelError(f"{path}: refused: entry name {bad[0]!r} is not a plain file name "
                         "(path traversal?)")
    if len(set(names)) != len(names):
        raise ModelError(f"{path}: refused: duplicate entries in the archive")
    if "bundle.json" not in names:
        raise ModelError(f"{path}: not a HER2Radiomics bundle (no bundle.json)")
    unexpected = [n for n in names if n != "bundle.json" and n not in MODEL_FORMATS.values()]
    if unexpected or len(names) > 2:
        raise ModelError(f"{path}: refused: unexpected entr{'ies' if len(unexpected) > 1 else 'y'}"
                         f" {', '.join(map(repr, unexpected or names))} (a bundle holds only "
                         "bundle.json and its model file)")
    by = {i.filename: i for i in infos}
    meta = by["bundle.json"]
    if meta.file_size > MAX_META_BYTES:
        raise ModelError(f"{path}: refused: bundle.json is {meta.file_size >> 20} MiB "
                         f"(cap {MAX_META_BYTES >> 20} MiB)")
    model = next((by[n] for n in names if n != "bundle.json"), None)
    if model is not None and model.file_size > MAX_MODEL_BYTES:
        raise ModelError(f"{path}: refused: {model.filename} is {model.file_size >> 20} MiB "
                         f"(cap {MAX_MODEL_BYTES >> 20} MiB)")
    for info in (meta, model):
        if info is not None:
            _check_ratio(info, path)
    return meta, model


def _check_version_and_digest(doc: dict, path) -> None:
    fv = doc.get("format_version")
    if not isinstance(fv, int):
        raise ModelError(f"{path}: tampered or corrupt bundle: format_version {fv!r}")
    if fv > FORMAT_VERSION:
        raise ModelError(f"{path}: bundle format {fv} is newer than this HER2RadiomicsLib "
                         f"supports ({FORMAT_VERSION}); upgrade HER2RadiomicsLib")
    if fv < 2:
        raise ModelError(f"{path}: bundle format {fv} has no integrity digest; retrain it with "
                         "this version (or load it with --trust if you trust its source)")
    rec = doc.get(_INTEGRITY_KEY)
    if not isinstance(rec, dict) or not isinstance(rec.get("fields"), dict):
        raise ModelError(f"{path}: tampered or corrupt bundle: integrity record missing")
    now = integrity_record(doc)
    changed = sorted(k for k in set(now["fields"]) | set(rec["fields"])
                     if now["fields"].get(k) != rec["fields"].get(k))
    if changed:
        raise ModelError(f"{path}: tampered or corrupt bundle: {', '.join(changed[:5])}")
    if now["digest"] != rec.get("digest"):
        raise ModelError(f"{path}: tampered or corrupt bundle: integrity digest")


def _check_skops_archive(blob: bytes, path) -> dict:
    """Limits on the skops model's own inner zip (entry count, inflated size, compression
    ratio, schema depth and object graph); returns the parsed schema."""
    try:
        inner = zipfile.ZipFile(io.BytesIO(blob))
    except Exception:  # noqa: BLE001 -- BadZipFile, or a damaged directory
        raise ModelError(f"{path}: the model is not a skops file (corrupt or disguised "
                         "content)") from None
    with inner:
        infos = inner.infolist()
        if len(infos) > MAX_INNER_ENTRIES:
            raise ModelError(f"{path}: refused: the model holds {len(infos)} entries "
                             f"(cap {MAX_INNER_ENTRIES})")
        total = sum(i.file_size for i in infos)
        if total > MAX_MODEL_UNCOMPRESSED_BYTES:
            raise ModelError(f"{path}: refused: the model inflates to {total >> 20} MiB "
                             f"(cap {MAX_MODEL_UNCOMPRESSED_BYTES >> 20} MiB)")
        for info in infos:
            _check_ratio(info, path)
        schema = next((i for i in infos if i.filename == "schema.json"), None)
        if schema is None:
            raise ModelError(f"{path}: the model is not a skops file (no schema)")
        doc = _safe_json(_read_entry(inner, schema, MAX_META_BYTES, path), "the model schema",
                         path)
    # skops' audit walks this graph recursively, following every reference again: bound it
    # before skops sees it
    check_schema_graph(doc, path)
    return doc


def audit_types(blob: bytes, path="model", checked: bool = False) -> tuple:
    """``(refused, untrusted)``: type names of a skops blob outside skops' safe defaults
    (``untrusted``) and those of them outside :data:`ALLOWED_TYPES` (``refused``).

    The archive's limits and object graph are checked first, unless ``checked`` says the
    caller did.
    """
    if not checked:
        _check_skops_archive(blob, path)
    import skops.io as sio
    try:
        types = sio.get_untrusted_types(data=blob)
    except Exception as exc:  # noqa: BLE001 -- skops raises several types for a malformed file
        raise ModelError(f"{path}: unreadable skops model ({type(exc).__name__}: {exc})") \
            from None
    return [t for t in types if current_type_name(t) not in ALLOWED_TYPES], types


def _within(seconds: float, work, path):
    """``work()`` in a thread, refused with a ModelError naming ``path`` after ``seconds``.

    The caps on the schema bound what skops does; this is the last line: a file that still
    keeps skops busy is given up on (the thread is left to finish on its own, as a daemon).
    """
    result = {}

    def run():
        try:
            result["value"] = work()
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller, whatever it is
            result["error"] = exc
    old = threading.stack_size()
    try:
        threading.stack_size(_LOAD_STACK_BYTES)
        t = threading.Thread(target=run, name="her2radiomics-bundle-load", daemon=True)
        t.start()
    finally:
        threading.stack_size(old)
    t.join(seconds)
    if t.is_alive():
        raise ModelError(f"{path}: refused: auditing and loading the model took longer than "
                         f"{seconds:g} s (a damaged or hostile model file)")
    if "error" in result:
        raise result["error"]
    return result["value"]


def _load_skops(blob: bytes, path, trust: bool):
    import skops.io as sio
    bad, types = audit_types(blob, path, checked=True)
    if bad and not trust:
        raise ModelError(f"{path}: refused: the model contains type(s) outside the "
                         f"allow-list: {', '.join(bad[:5])}; load it with --trust only if "
                         "you trust its source")
    try:
        with _legacy_module_aliases():
            return sio.loads(blob, trusted=list(types) if trust else
                             [t for t in types if current_type_name(t) in ALLOWED_TYPES])
    except Exception as exc:  # noqa: BLE001 -- skops raises many types for a damaged file
        raise ModelError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") \
            from None



def load_bundle(path, trust: bool = False) -> Bundle:
    """Load a bundle safely.

    Parameters
    ----------
    trust : bool
        Allow types outside the allow-list in a skops file, joblib (pickle) bundles and
        format-1 bundles without a digest. Only for files from a source you trust: a pickle
        can run arbitrary code. Size, name and digest checks still apply.

    Raises
    ------
    ModelError
        Not a bundle, over a limit, corrupt entry, newer format, digest or hash mismatch,
        untrusted content, an object graph too large to audit, a load over
        :data:`LOAD_TIMEOUT_S`, a damaged tree, impossible metadata, unreadable model.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: bundle not found")
    with _open_zip(path) as z:
        meta_info, model_info = _checked_entries(z, path)
        meta = _safe_json(_read_entry(z, meta_info, MAX_META_BYTES, path), "bundle.json", path)
        if not isinstance(meta, dict):
            raise ModelError(f"{path}: bundle.json is not an object (corrupt bundle)")
        try:
            _check_version_and_digest(meta, path)
        except ModelError as exc:
            if not (trust and "no integrity digest" in str(exc)):
                raise
        fmt = meta.get("model_format")
        if fmt not in MODEL_FORMATS:
            raise ModelError(f"{path}: unknown model format {fmt!r} (skops, or joblib with "
                             "--trust)")
        name = meta.get("model_file")
        if model_info is None or name != model_info.filename or name != MODEL_FORMATS[fmt]:
            raise ModelError(f"{path}: model file {name!r} missing from the bundle or not the "
                             f"{fmt} entry")
        if fmt == "joblib" and not trust:
            raise ModelError(f"{path}: joblib (pickle) bundles run code when loaded; pass "
                             "--trust to load one from a source you trust")
        blob = _read_entry(z, model_info, MAX_MODEL_BYTES, path)
    if _sha(blob) != meta.get("model_sha256"):
        raise ModelError(f"{path}: tampered or corrupt bundle: model_sha256 (the model file "
                         "does not match bundle.json)")
    if fmt == "skops":
        _check_skops_archive(blob, path)
        # imported here, not in the timed thread: importing skops costs seconds (it lists
        # every scikit-learn estimator), and a refused file above never needs it
        import skops.io  # noqa: F401

    def work():
        if fmt == "skops":
            model = _load_skops(blob, path, trust)
        else:
            import joblib
            model = joblib.load(io.BytesIO(blob))
        if not isinstance(model, dict) or "pipeline" not in model:
            raise ModelError(f"{path}: the model file does not hold a HER2Radiomics pipeline")
        check_trees(model, path)
        _for_older_sklearn(model)
        return model
    model = _within(LOAD_TIMEOUT_S, work, path)
    pipeline = model["pipeline"]
    classes = getattr(pipeline, "classes_", None)
    if not trust and (classes is None or not callable(getattr(pipeline, "predict_proba", None))):
        raise ModelError(f"{path}: the model file does not hold a classifier")
    check_meta(meta, path, classes)
    return Bundle(meta, model, path)
