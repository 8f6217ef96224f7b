"""The library's runtime requirements as data, for installers that cannot read pyproject.toml.

The Slicer module installs these on first use (never at import time). ``pyproject.toml`` is the
source (with the reason for every floor); ``Testing/test_requirements_floors.py`` fails when the
two lists drift apart. This file must stay importable with the standard library alone: it runs
before anything is installed (so no ``packaging``: the only markers used, ``python_version``
comparisons, are evaluated here).

Each entry: (requirement, how Slicer gets it, why). :data:`ALL_REQUIREMENTS` mirrors pyproject,
markers included; :data:`REQUIREMENTS` holds the entries for the running Python, markers removed
(what the installer checks and installs).
"""
import re
import sys

#: install modes inside Slicer
PIP = "pip"                 # slicer.packaging.pip_ensure / slicer.util.pip_install
SLICER = "slicer"           # shipped with Slicer: never installed or replaced
PYTORCH = "pytorch"         # via the PyTorch extension's PyTorchUtils (picks the CUDA build)

_NP = "Slicer ships numpy; replacing it breaks Slicer's compiled modules"
_ITK = "Slicer ships its own SimpleITK build; never replace it"
_PYWT = "wavelet image type of the feature engine (wheels for 3.9-3.13)"
_SKL = "model pipelines and their bundles"
_SCIPY = "distance transforms for the rings"
_SKIMAGE = "contours, FOV hull, resizing"
_PANDAS = "feature tables"
_YAML = "params and recipe files"
_MPL = "report figures"
_IMB = "SMOTE inside the zhao2025 pipeline"
_SM = "calibration fits and nomogram odds ratios"

#: every entry of pyproject.toml, per-Python floors as environment markers
ALL_REQUIREMENTS = [
    ("numpy>=1.26; python_version<'3.12'", SLICER, _NP),
    ("numpy>=2.0; python_version>='3.12'", SLICER, _NP),
    ("SimpleITK>=2.2; python_version<'3.12'", SLICER, _ITK),
    ("SimpleITK>=2.3.1; python_version>='3.12'", SLICER, _ITK),
    ("PyWavelets>=1.4.1; python_version<'3.12'", PIP, _PYWT),
    ("PyWavelets>=1.6; python_version>='3.12'", PIP, _PYWT),
    ("scikit-learn>=1.6", PIP, _SKL),
    ("scipy>=1.10; python_version<'3.12'", PIP, _SCIPY),
    ("scipy>=1.13; python_version>='3.12'", PIP, _SCIPY),
    ("scikit-image>=0.21; python_version<'3.12'", PIP, _SKIMAGE),
    ("scikit-image>=0.23.1; python_version>='3.12'", PIP, _SKIMAGE),
    ("pandas>=2.0; python_version<'3.12'", PIP, _PANDAS),
    ("pandas>=2.2.2; python_version>='3.12'", PIP, _PANDAS),
    ("joblib>=1.3", PIP, "parallel batch extraction"),
    ("pydicom>=2.4", PIP, "ultrasound-region calibration, which SimpleITK does not expose"),
    ("PyYAML>=6.0; python_version<'3.12'", PIP, _YAML),
    ("PyYAML>=6.0.1; python_version>='3.12'", PIP, _YAML),
    ("tqdm>=4.60", PIP, "progress bars of the batch commands"),
    ("matplotlib>=3.7; python_version<'3.12'", PIP, _MPL),
    ("matplotlib>=3.8.4; python_version>='3.12'", PIP, _MPL),
    ("imbalanced-learn>=0.12.3", PIP, _IMB),
    ("skops>=0.11", PIP, "allow-listed model bundle format (no code runs on load)"),
    ("statsmodels>=0.14; python_version<'3.12'", PIP, _SM),
    ("statsmodels>=0.14.2; python_version>='3.12'", PIP, _SM),
]

_MARKER = re.compile(r"""^python_version\s*(<=|>=|==|!=|<|>)\s*(['"])(\d+)\.(\d+)\2$""")
_COMPARE = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


def split_marker(requirement: str) -> tuple:
    """``"scipy>=1.13; python_version>='3.12'"`` -> ``("scipy>=1.13", "python_version>='3.12'")``
    (marker ``""`` when there is none)."""
    req, _, marker = requirement.partition(";")
    return req.strip(), marker.strip()


def applies(requirement: str, python=None) -> bool:
    """Whether ``requirement``'s marker holds on ``python`` ((major, minor); default: this one).

    Only ``python_version <op> 'X.Y'`` markers are understood (the only kind pyproject uses);
    anything else raises ValueError rather than guessing.
    """
    _, marker = split_marker(requirement)
    if not marker:
        return True
    m = _MARKER.match(marker)
    if m is None:
        raise ValueError(f"unsupported marker in {requirement!r}: only python_version "
                         "comparisons are understood")
    here = tuple(python or sys.version_info[:2])
    return _COMPARE[m.group(1)](here, (int(m.group(3)), int(m.group(4))))


def for_python(python=None) -> list:
    """The entries that apply to ``python`` (default: the running one), markers removed."""
    return [(split_marker(r)[0], mode, why) for r, mode, why in ALL_REQUIREMENTS
            if applies(r, python)]


REQUIREMENTS = for_python()

#: optional extra: the CNN auto-mask
TORCH = ("torch>=2.1", PYTORCH, "CNN auto-mask; the PyTorch extension picks a CUDA/CPU build")


def names(mode=None, python=None) -> list:
    """Requirement strings for ``python`` (default: the running one; ``"all"``: every entry
    of pyproject with its marker), optionally only those installed in ``mode``."""
    entries = ALL_REQUIREMENTS if python == "all" else for_python(python)
    return [r for r, m, _ in entries if mode is None or m == mode]
