"""Install the library's Python requirements inside Slicer, on first use, after asking once.

Never at import time: the module must load (and show its panel) even when nothing is
installed. The list comes from ``HER2RadiomicsLib/requirements.py`` (kept in sync with
``pyproject.toml`` by a test). Rules, each with its reason:

- numpy and SimpleITK ship with Slicer and are never installed or replaced (replacing them
  breaks Slicer's compiled modules);
- every other entry ships wheels for the Pythons Slicer bundles (3.9 in 5.8, 3.12 in 5.10+):
  nothing is compiled, so no C compiler is needed (pyradiomics, which needs one, is not
  installed: the features come from the library's own engine);
- torch comes from the PyTorch extension's ``PyTorchUtils`` (which picks the CUDA/CPU build),
  and is asked for only when the CNN is used (it is several GB; rings and features do not
  need it); our one confirmation covers it (``installTorch(askConfirmation=False,
  torchVersionRequirement=...)``, as SlicerNNUnet does), and a failed or offline install is
  one error;
- pip runs with a constraints file pinning the numpy, scipy and SimpleITK Slicer already has
  (otherwise pandas or tifffile can pull a newer numpy into Slicer's Python);
- ``slicer.packaging.pip_ensure`` (Slicer 5.12 and its 5.11 previews; not imported by
  ``slicer``) is imported explicitly and called after our own single confirmation; Slicer 5.8
  and 5.10 fall back to ``slicer.util.pip_install``.

Example (Slicer's Python console)::

    from HER2RadiomicsModuleLib import dependencies as D
    D.missingRequirements()        # [] when everything is there
    D.ensureDependencies(confirm=lambda text: slicer.util.confirmOkCancelDisplay(text))
"""
import importlib.metadata
import logging
import os
import sys

log = logging.getLogger(__name__)


def _requirementsModule():
    try:
        from HER2RadiomicsLib import requirements
    except ImportError:  # running from a source tree: the library sits beside this folder
        here = os.path.abspath(__file__)
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(here))))
        from HER2RadiomicsLib import requirements
    return requirements


def _satisfied(requirement):
    """True when the installed version satisfies the requirement string."""
    name = requirement
    for sep in ("==", ">=", "<=", "~=", ">", "<"):
        name = name.split(sep)[0]
    try:
        installed = importlib.metadata.version(name.strip())
    except importlib.metadata.PackageNotFoundError:
        return False
    try:
        from packaging.requirements import Requirement
        return Requirement(requirement).specifier.contains(installed, prereleases=True)
    except ImportError:  # no 'packaging': presence is the best check available
        return True


def missingRequirements(includeTorch=False):
    """The (requirement, mode, reason) entries that are not satisfied, Slicer's own excluded."""
    R = _requirementsModule()
    entries = [e for e in R.REQUIREMENTS if e[1] != R.SLICER]
    if includeTorch:
        entries.append(R.TORCH)
    return [e for e in entries if not _satisfied(e[0])]


#: packages Slicer ships that pip must not upgrade while installing ours
PINNED_FROM_SLICER = ("numpy", "scipy", "SimpleITK")


def slicerConstraints(directory=None):
    """A pip constraints file pinning the versions of :data:`PINNED_FROM_SLICER` that are
    installed now; returns its path."""
    import tempfile
    lines = []
    for name in PINNED_FROM_SLICER:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    fd, path = tempfile.mkstemp(prefix="HER2Radiomics-constraints-", suffix=".txt",
                                dir=directory)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _slicerPipEnsure():
    """Slicer's ``slicer.packaging.pip_ensure`` (5.12), imported explicitly, or None on older
    versions."""
    import importlib
    try:
        module = importlib.import_module("slicer.packaging")
    except ImportError:
        return None
    return getattr(module, "pip_ensure", None)


class SlicerInstaller:
    """The installs, done with Slicer's own tools (replaced by a recorder in the tests)."""

    def pipEnsure(self, requirements):
        import inspect

        import slicer
        constraints = slicerConstraints()
        ensure = _slicerPipEnsure()
        if ensure is not None:
            wanted = {"requester": "HER2Radiomics", "constraints": constraints,
                      # we asked once already; and install during self-tests too
                      "prompt_install": False, "skip_in_testing": False}
            accepted = inspect.signature(ensure).parameters
            ensure(list(requirements), **{k: v for k, v in wanted.items() if k in accepted})
        else:
            slicer.util.pip_install(list(requirements) + ["-c", constraints])

    def installTorch(self, requirement=None):
        """torch through the PyTorch extension, without a second question (ours covered it).

        Raises
        ------
        RuntimeError
            One line: the extension is missing, the install was declined, or it failed
            (offline, no matching build).
        """
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError("the CNN needs the PyTorch extension: install 'PyTorch' from the "
                               "Extensions Manager and restart Slicer") from None
        import inspect
        logic = PyTorchUtils.PyTorchUtilsLogic()
        if logic.torchInstalled():
            return
        wanted = {"askConfirmation": False}
        if requirement:
            wanted["torchVersionRequirement"] = _specifier(requirement)
        accepted = inspect.signature(logic.installTorch).parameters
        try:
            torch = logic.installTorch(**{k: v for k, v in wanted.items() if k in accepted})
        except Exception as exc:  # noqa: BLE001 -- pip's CalledProcessError when offline: one line, no log
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise RuntimeError("PyTorch could not be installed (no network, or no build for "
                               f"this computer?): {first}") from None
        if torch is None:
            raise RuntimeError("PyTorch was not installed")


def _specifier(requirement):
    """``torch>=2.1`` -> ``>=2.1`` (what PyTorchUtils' torchVersionRequirement takes)."""
    for i, ch in enumerate(requirement):
        if ch in "<>=!~":
            return requirement[i:].strip()
    return ""


def ensureDependencies(confirm=None, installer=None, includeTorch=False):
    """Install what is missing after one confirmation; returns True when all is present.

    Parameters
    ----------
    confirm : callable(text) -> bool, optional
        Asked once with the list of packages and reasons; False cancels (nothing installed).
    installer : SlicerInstaller, optional
        Does the installs (tests pass a recorder).
    includeTorch : bool
        Also PyTorch: only for the CNN (auto-segmentation).
    """
    R = _requirementsModule()
    missing = missingRequirements(includeTorch)
    if not missing:
        return True
    text = ("HER2Radiomics needs these Python packages (installed once, into Slicer's Python):\n"
            + "\n".join(f"  {r}: {why}" for r, _, why in missing) + "\nInstall now?")
    if confirm is not None and not confirm(text):
        return False
    installer = installer or SlicerInstaller()
    pip = [r for r, mode, _ in missing if mode == R.PIP]
    if pip:
        installer.pipEnsure(pip)
    torch = [r for r, mode, _ in missing if mode == R.PYTORCH]
    if torch:
        installer.installTorch(torch[0])
    return True
