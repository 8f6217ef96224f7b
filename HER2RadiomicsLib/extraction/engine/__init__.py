"""Radiomics features in plain numpy, with pyradiomics 3.0.1's definitions.

One module per feature class, each with its formulas (and IBSI names) in its docstring:
:mod:`.firstorder`, :mod:`.shape2d`, :mod:`.glcm`, :mod:`.glrlm`, :mod:`.glszm`, :mod:`.gldm`
(the last three share :mod:`.family`'s formulas) and :mod:`.ngtdm`. :mod:`.region` holds what
they share: the discretisation, the :class:`~.region.Settings` they read and the
:class:`~.region.Region` object (a discretised region and the arrays derived from it, computed
once and passed from class to class).

Use::

    settings = Settings.from_params({"binWidth": 25})
    region = Region.of(image, mask, spacing_xy_mm, settings)
    values = {cls: CLASS_FUNCTIONS[cls](region, settings) for cls in ("glcm", "ngtdm")}
    shape = shape2d(mask, spacing_xy_mm)

The definitions (discretisation, GLCM angles and normalisation, the handling of empty grey
levels and angles, the ``eps`` guards) follow pyradiomics, so that values agree to
floating-point rounding (tested to 1e-9 relative against pyradiomics itself, and against
committed reference values in ``Testing/data/engine_reference``). Only 2D images are
handled: breast ultrasound and mammography frames.
"""
from .firstorder import FIRSTORDER, FIRSTORDER_OPTIONAL, firstorder, firstorder_values
from .family import family_features
from .glcm import GLCM, glcm, glcm_features, glcm_matrices, glcm_normalise
from .gldm import GLDM, gldm, gldm_features
from .glrlm import GLRLM, glrlm, glrlm_features, glrlm_normalise
from .glszm import GLSZM, glszm, glszm_features
from .ngtdm import NGTDM, ngtdm, ngtdm_features, ngtdm_from_counts, ngtdm_values
from .region import EPS, Region, Settings, angles_2d, bin_edges, discretise
from .shape2d import SHAPE2D, shape2d

#: feature class -> its default feature names (pyradiomics' class names)
CLASSES = {"firstorder": FIRSTORDER, "glcm": GLCM, "glrlm": GLRLM, "glszm": GLSZM,
           "gldm": GLDM, "ngtdm": NGTDM, "shape2D": SHAPE2D}
#: texture class -> ``f(region, settings, names)`` (shape2D reads the mask only)
CLASS_FUNCTIONS = {"firstorder": firstorder, "glcm": glcm, "glrlm": glrlm, "glszm": glszm,
                   "gldm": gldm, "ngtdm": ngtdm}

__all__ = ["CLASSES", "CLASS_FUNCTIONS", "EPS", "FIRSTORDER", "FIRSTORDER_OPTIONAL", "GLCM",
           "GLDM", "GLRLM", "GLSZM", "NGTDM", "Region", "SHAPE2D", "Settings", "angles_2d",
           "bin_edges", "discretise", "family_features", "firstorder", "firstorder_values",
           "glcm", "glcm_features", "glcm_matrices", "glcm_normalise", "gldm",
           "gldm_features", "glrlm", "glrlm_features", "glrlm_normalise", "glszm",
           "glszm_features", "ngtdm", "ngtdm_features",
           "ngtdm_from_counts", "ngtdm_values", "shape2d"]
