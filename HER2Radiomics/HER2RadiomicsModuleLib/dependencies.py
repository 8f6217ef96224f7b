"""Install the library's Python requirements inside Slicer, on first use, after asking once.

Never at import time: the module must load (and show its panel) even when nothing is
installed. The list comes from ``HER2RadiomicsLib/requirements.py`` (kept in sync with
``pyproject.toml`` by a test). Rules, each with its reason:

- numpy and SimpleITK ship with Slicer and are never installed or replaced (replacing them
  breaks Slicer's compiled modules);
- every other entry ships wheels for the Pythons Slicer bundles (3.9 in 5.8, 3.12 in 5.10+):
  nothing is compiled, so no C compiler is needed (pyradiomics, which needs one, is not
  installed: the features come from the library's own engine);
- torch comes from the PyTorch extension's ``PyTorchUtils`` (which picks the CUDA/CPU build).

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
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
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


def missingRequirements(includeTorch=True):
    """The (requirement, mode, reason) entries that are not satisfied, Slicer's own excluded."""
    R = _requirementsModule()
    entries = [e for e in R.REQUIREMENTS if e[1] != R.SLICER]
    if includeTorch:
        entries.append(R.TORCH)
    return [e for e in entries if not _satisfied(e[0])]


class SlicerInstaller:
    """The installs, done with Slicer's own tools (replaced by a recorder in the tests)."""

    def pipEnsure(self, requirements):
        import slicer
        packaging = getattr(slicer, "packaging", None)
        if packaging is not None and hasattr(packaging, "pip_ensure"):
            packaging.pip_ensure(requirements, requester="HER2Radiomics")
        else:
            slicer.util.pip_install(requirements)

    def installTorch(self):
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError("the CNN needs the PyTorch extension: install 'PyTorch' from the "
                               "Extensions Manager and restart Slicer") from None
        logic = PyTorchUtils.PyTorchUtilsLogic()
        if not logic.torchInstalled():
            if logic.installTorch(askConfirmation=True) is None:
                raise RuntimeError("PyTorch was not installed")


def ensureDependencies(confirm=None, installer=None, includeTorch=True):
    """Install what is missing after one confirmation; returns True when all is present.

    Parameters
    ----------
    confirm : callable(text) -> bool, optional
        Asked once with the list of packages and reasons; False cancels (nothing installed).
    installer : SlicerInstaller, optional
        Does the installs (tests pass a recorder).
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
    if any(mode == R.PYTORCH for _, mode, _ in missing):
        installer.installTorch()
    return True
