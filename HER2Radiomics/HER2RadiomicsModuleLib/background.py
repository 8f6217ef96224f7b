"""The panel's long steps off the GUI thread: the CNN, the prediction and the report.

Slicer's Python holds the GIL while the GUI idles, so a worker thread crawls; the scripted CLI
(``HER2RadiomicsCLI``) runs them in its own process with progress and Cancel
(``slicer.cli.run(..., wait_for_completion=False)``), as feature extraction already does.

Nothing is extracted twice: the features the panel or a prediction has just computed are kept
with fingerprints of the pixels they came from (the image, each region mask, the params text),
and a prediction or report on the same pixels uses them in process, in milliseconds.

MRML only (no Qt): the same code runs in Slicer and on ``slicer-core`` in the tests.

Library names come from its public face (``from HER2RadiomicsLib import ...``) inside the
methods: Slicer loads this module before the library's dependencies (numpy, SimpleITK,
scikit-learn) are installed on first use (:mod:`HER2RadiomicsModuleLib.dependencies`).
"""
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path


class Job:
    """A long task on a worker thread with progress and cancel (polled by the widget's timer).

    Pure Python so the tests drive it without Qt: ``start()``, then ``progress`` (0-1),
    ``message``, ``cancel()``, ``wait()``; ``result`` or ``error`` when ``done``.
    """

    def __init__(self, name, function):
        self.name = name
        self._function = function
        self.progress = 0.0
        self.message = ""
        self.result = None
        self.error = None
        self.cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"HER2Radiomics-{name}",
                                        daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        try:
            self.result = self._function(self)
        except Exception as exc:  # noqa: BLE001 -- reported to the GUI as a one-line message, never lost
            self.error = exc
        finally:
            self.progress = 1.0 if self.error is None else self.progress

    def report(self, fraction, message=""):
        """Called by the task: returns False once the user has cancelled."""
        self.progress = float(fraction)
        self.message = message
        return not self.cancelled.is_set()

    def cancel(self):
        self.cancelled.set()

    @property
    def done(self):
        return not self._thread.is_alive() and self._thread.ident is not None

    def wait(self, timeout=None):
        self._thread.join(timeout)
        return self.done


class CliJob:
    """The scripted CLI running a task in its own process (``slicer.cli.run(...,
    wait_for_completion=False)``), seen through the same interface as :class:`Job`.

    Progress comes from the CLI's ``<filter-progress>`` lines (the node's ``GetProgress()``,
    0-100), Cancel is the node's ``Cancel()`` (Slicer stops the process; the CLI writes its
    outputs atomically, so nothing half-written is read). ``kind`` says which ``finish``
    step reads its outputs; ``files`` are temporary files the job owns.
    """

    def __init__(self, name, cliNode, outputTableNode=None, tableNode=None, temporaryNodes=(),
                 kind="features", files=(), context=None):
        self.name = name
        self.kind = kind
        self.cliNode = cliNode
        self.outputTableNode = outputTableNode
        self.tableNode = tableNode
        self.temporaryNodes = list(temporaryNodes)
        self.files = list(files)
        self.context = dict(context or {})

    @property
    def progress(self):
        return self.cliNode.GetProgress() / 100.0

    @property
    def message(self):
        return self.name

    @property
    def done(self):
        n = self.cliNode
        return n.GetStatus() in (n.Completed, n.CompletedWithErrors, n.Cancelled)

    def cancel(self):
        if not self.done:
            self.cliNode.Cancel()

    def wait(self, timeout=None):
        """Poll until done. Only for ``wait_for_completion=True`` runs and tests: with
        ``False`` Slicer reads the outputs on the GUI thread, which a loop here would block."""
        import time
        end = None if timeout is None else time.monotonic() + timeout
        while not self.done and (end is None or time.monotonic() < end):
            time.sleep(0.05)
        return self.done

    def errorLine(self):
        """The CLI's one-line error (``error: ...`` on stderr), else its last stderr line."""
        lines = [ln.strip() for ln in (self.cliNode.GetErrorText() or "").splitlines()
                 if ln.strip()]
        errors = [ln[len("error:"):].strip() for ln in lines if ln.startswith("error:")]
        return errors[0] if errors else (lines[-1] if lines else "the CLI failed")

    def check(self, what):
        """Raise ``Cancelled`` or ``ValueError`` (the CLI's one line) unless it completed."""
        from HER2RadiomicsLib import Cancelled
        node = self.cliNode
        if node.GetStatus() == node.Cancelled:
            raise Cancelled(f"{what} cancelled")
        if node.GetStatus() != node.Completed:
            raise ValueError(self.errorLine())


def digest(*parts) -> str:
    """A fingerprint of arrays (their pixels, shape and type) and text."""
    import numpy as np
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, str):
            h.update(p.encode())
        else:
            a = np.ascontiguousarray(p)
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def imageDigest(loaded) -> str:
    import SimpleITK as sitk
    return digest(sitk.GetArrayViewFromImage(loaded.image),
                  repr(tuple(round(s, 9) for s in loaded.image.GetSpacing())))


def maskDigest(mask) -> str:
    import SimpleITK as sitk
    return digest(sitk.GetArrayViewFromImage(mask) > 0)


class FeatureMemory:
    """Features extracted for exact pixels: the image, each region's mask and the params.

    ``remember`` after any extraction (the panel's, in process or in the CLI, or a
    prediction's); ``recall`` gives the features of the regions asked for when every one of
    them, the image and the params text are unchanged, else None.
    """

    def __init__(self):
        self._image = None
        self._params = None
        self._regions = {}
        self._features = {}

    def remember(self, loaded, masks, paramsText, features):
        image, params = imageDigest(loaded), digest(paramsText)
        if (image, params) != (self._image, self._params):
            self._image, self._params, self._regions, self._features = image, params, {}, {}
        for region, mask in masks.items():
            self._regions[region] = maskDigest(mask)
        self._features.update({k: v for k, v in features.items()
                               if k.split("__", 1)[0] in masks})

    def recall(self, loaded, masks, paramsText):
        if self._image is None or (imageDigest(loaded), digest(paramsText)) != (
                self._image, self._params):
            return None
        for region, mask in masks.items():
            if self._regions.get(region) != maskDigest(mask):
                return None
        out = {k: v for k, v in self._features.items() if k.split("__", 1)[0] in masks}
        return out if {k.split("__", 1)[0] for k in out} == set(masks) else None

    def forget(self):
        self.__init__()


def bundleRegions(bundle, loaded, tumourMask):
    """The bundle's regions for this tumour, built as a prediction builds them (no features:
    a distance map, tens of milliseconds)."""
    from HER2RadiomicsLib import build_regions
    rings = bundle.meta.get("rings") or {}
    regs = build_regions(loaded, tumourMask, rings.get("rings_mm", []),
                         annuli=rings.get("annuli", False), combined=rings.get("combined", []))
    return {r: regs.masks[r] for r in bundle.meta["regions"]}


def temporaryFile(suffix):
    """A path for a CLI output file (the caller removes it)."""
    fd, path = tempfile.mkstemp(prefix="HER2Radiomics-", suffix=suffix)
    os.close(fd)
    os.unlink(path)        # the CLI writes it atomically; an absent file means 'not written'
    return path


def readJson(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise ValueError("the CLI wrote no result") from None


def removeFiles(paths):
    for p in paths:
        try:
            os.unlink(p)
        except OSError:
            pass
