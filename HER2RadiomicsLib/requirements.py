"""The library's runtime requirements as data, for installers that cannot read pyproject.toml.

The Slicer module installs these on first use (never at import time). ``pyproject.toml`` is the
source; ``Testing/test_slicer_packaging.py`` fails when the two lists drift apart. This file must
stay importable with the standard library alone: it runs before anything is installed.

Each entry: (requirement, how Slicer gets it, why).
"""

#: install modes inside Slicer
PIP = "pip"                 # slicer.packaging.pip_ensure / slicer.util.pip_install
SLICER = "slicer"           # shipped with Slicer: never installed or replaced
PYTORCH = "pytorch"         # via the PyTorch extension's PyTorchUtils (picks the CUDA build)

REQUIREMENTS = [
    ("numpy>=1.24", SLICER, "Slicer ships numpy; replacing it breaks Slicer's compiled modules"),
    ("SimpleITK>=2.2", SLICER, "Slicer ships its own SimpleITK build; never replace it"),
    ("PyWavelets>=1.4", PIP, "wavelet image type of the feature engine (wheels for 3.9-3.13)"),
    ("scikit-learn>=1.3", PIP, "set_output(transform='pandas') used across the pipeline"),
    ("scipy>=1.10", PIP, "distance transforms for the rings"),
    ("scikit-image>=0.21", PIP, "contours, FOV hull, resizing"),
    ("pandas>=2.0", PIP, "feature tables"),
    ("joblib>=1.3", PIP, "parallel batch extraction"),
    ("pydicom>=2.4", PIP, "ultrasound-region calibration, which SimpleITK does not expose"),
    ("PyYAML>=6.0", PIP, "params and recipe files"),
    ("tqdm>=4.60", PIP, "progress bars of the batch commands"),
    ("matplotlib>=3.7", PIP, "report figures"),
    ("imbalanced-learn>=0.12", PIP, "SMOTE inside the zhao2025 pipeline"),
    ("skops>=0.10", PIP, "allow-listed model bundle format (no code runs on load)"),
    ("statsmodels>=0.14", PIP, "calibration fits and nomogram odds ratios"),
]

#: optional extra: the CNN auto-mask
TORCH = ("torch>=2.1", PYTORCH, "CNN auto-mask; the PyTorch extension picks a CUDA/CPU build")


def names(mode=None) -> list:
    """Requirement strings, optionally only those installed in ``mode``."""
    return [r for r, m, _ in REQUIREMENTS if mode is None or m == mode]
