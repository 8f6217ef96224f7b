"""Validate a pyradiomics params file without pyradiomics.

The rules follow pyradiomics 3.0.1's own schema (``radiomics/schemas/paramSchema.yaml`` and its
check functions): the same setting names, types and ranges, the same image types and feature
classes. A test runs both validators on the same good and bad files and expects the same
verdicts. Whether our engine *implements* a valid setting is a separate question answered by
:mod:`.native`.
"""
from __future__ import annotations

import yaml

from ..errors import InputError

# (type, lower bound, lower bound exclusive, upper bound); type "float" accepts ints too, "int"
# refuses booleans (YAML's true is not a count), as pykwalify does.
_INT, _FLOAT, _BOOL, _STR = "int", "float", "bool", "str"
SETTINGS = {
    "minimumROIDimensions": (_INT, 1, False, 3),
    "minimumROISize": (_INT, 0, True, None),
    "geometryTolerance": (_FLOAT, 0, True, None),
    "correctMask": (_BOOL,), "additionalInfo": (_BOOL,),
    "label": (_INT, 0, True, None),
    "label_channel": (_INT, 0, False, None),
    "binWidth": (_FLOAT, 0, True, None),
    "binCount": (_INT, 0, True, None),
    "normalize": (_BOOL,),
    "normalizeScale": (_FLOAT, 0, True, None),
    "removeOutliers": (_FLOAT, 0, True, None),
    "resampledPixelSpacing": ("seq", _FLOAT, 0, False),
    "interpolator": ("interpolator",),
    "padDistance": (_INT, 0, False, None),
    "distances": ("seq", _INT, 0, True),
    "force2D": (_BOOL,),
    "force2Ddimension": (_INT, 0, False, 2),
    "resegmentRange": ("seq", _FLOAT, None, False),
    "resegmentMode": ("enum", ("absolute", "relative", "sigma")),
    "resegmentShape": (_BOOL,),
    "preCrop": (_BOOL,),
    "sigma": ("seq", _FLOAT, 0, True),
    "start_level": (_INT, 0, False, None),
    "level": (_INT, 0, True, None),
    "wavelet": ("wavelet",),
    "gradientUseSpacing": (_BOOL,),
    "lbp2DRadius": (_FLOAT, 0, True, None),
    "lbp2DSamples": (_INT, 1, False, None),
    "lbp2DMethod": ("enum", ("default", "ror", "uniform", "var")),
    "lbp3DLevels": (_INT, 1, False, None),
    "lbp3DIcosphereRadius": (_FLOAT, 0, True, None),
    "lbp3DIcosphereSubdivision": (_INT, 0, False, None),
    "voxelArrayShift": (_INT, None, False, None),
    "symmetricalGLCM": (_BOOL,),
    "weightingNorm": ("weighting",),
    "gldm_a": (_INT, 0, False, None),
}
VOXEL_SETTINGS = {"kernelRadius": (_INT, 0, True, None), "maskedKernel": (_BOOL,),
                  "initValue": (_FLOAT, None, False, None), "voxelBatch": (_INT, 0, True, None)}
IMAGE_TYPES = ("Exponential", "Gradient", "LBP2D", "LBP3D", "LoG", "Logarithm", "Original",
               "Square", "SquareRoot", "Wavelet")
INTERPOLATORS = ("sitkNearestNeighbor", "sitkLinear", "sitkBSpline", "sitkGaussian",
                 "sitkLabelGaussian", "sitkHammingWindowedSinc", "sitkCosineWindowedSinc",
                 "sitkWelchWindowedSinc", "sitkLanczosWindowedSinc", "sitkBlackmanWindowedSinc")
WEIGHTINGS = ("euclidean", "manhattan", "infinity", "no_weighting")

#: every feature name pyradiomics 3.0.1 recognises per class (deprecated ones included: its
#: schema accepts them; the engines then decide whether they compute them)
FEATURE_NAMES = {
    "firstorder": ("10Percentile", "90Percentile", "Energy", "Entropy", "InterquartileRange",
                   "Kurtosis", "Maximum", "Mean", "MeanAbsoluteDeviation", "Median", "Minimum",
                   "Range", "RobustMeanAbsoluteDeviation", "RootMeanSquared", "Skewness",
                   "StandardDeviation", "TotalEnergy", "Uniformity", "Variance"),
    "glcm": ("Autocorrelation", "ClusterProminence", "ClusterShade", "ClusterTendency",
             "Contrast", "Correlation", "DifferenceAverage", "DifferenceEntropy",
             "DifferenceVariance", "Dissimilarity", "Homogeneity1", "Homogeneity2", "Id", "Idm",
             "Idmn", "Idn", "Imc1", "Imc2", "InverseVariance", "JointAverage", "JointEnergy",
             "JointEntropy", "MCC", "MaximumProbability", "SumAverage", "SumEntropy",
             "SumSquares", "SumVariance"),
    "glrlm": ("GrayLevelNonUniformity", "GrayLevelNonUniformityNormalized",
              "GrayLevelVariance", "HighGrayLevelRunEmphasis", "LongRunEmphasis",
              "LongRunHighGrayLevelEmphasis", "LongRunLowGrayLevelEmphasis",
              "LowGrayLevelRunEmphasis", "RunEntropy", "RunLengthNonUniformity",
              "RunLengthNonUniformityNormalized", "RunPercentage", "RunVariance",
              "ShortRunEmphasis", "ShortRunHighGrayLevelEmphasis",
              "ShortRunLowGrayLevelEmphasis"),
    "glszm": ("GrayLevelNonUniformity", "GrayLevelNonUniformityNormalized",
              "GrayLevelVariance", "HighGrayLevelZoneEmphasis", "LargeAreaEmphasis",
              "LargeAreaHighGrayLevelEmphasis", "LargeAreaLowGrayLevelEmphasis",
              "LowGrayLevelZoneEmphasis", "SizeZoneNonUniformity",
              "SizeZoneNonUniformityNormalized", "SmallAreaEmphasis",
              "SmallAreaHighGrayLevelEmphasis", "SmallAreaLowGrayLevelEmphasis", "ZoneEntropy",
              "ZonePercentage", "ZoneVariance"),
    "gldm": ("DependenceEntropy", "DependenceNonUniformity", "DependenceNonUniformityNormalized",
             "DependencePercentage", "DependenceVariance", "GrayLevelNonUniformity",
             "GrayLevelNonUniformityNormalized", "GrayLevelVariance", "HighGrayLevelEmphasis",
             "LargeDependenceEmphasis", "LargeDependenceHighGrayLevelEmphasis",
             "LargeDependenceLowGrayLevelEmphasis", "LowGrayLevelEmphasis",
             "SmallDependenceEmphasis", "SmallDependenceHighGrayLevelEmphasis",
             "SmallDependenceLowGrayLevelEmphasis"),
    "ngtdm": ("Busyness", "Coarseness", "Complexity", "Contrast", "Strength"),
    "shape": ("Compactness1", "Compactness2", "Elongation", "Flatness", "LeastAxisLength",
              "MajorAxisLength", "Maximum2DDiameterColumn", "Maximum2DDiameterRow",
              "Maximum2DDiameterSlice", "Maximum3DDiameter", "MeshVolume", "MinorAxisLength",
              "SphericalDisproportion", "Sphericity", "SurfaceArea", "SurfaceVolumeRatio",
              "VoxelVolume"),
    "shape2D": ("Elongation", "MajorAxisLength", "MaximumDiameter", "MeshSurface",
                "MinorAxisLength", "Perimeter", "PerimeterSurfaceRatio", "PixelSurface",
                "SphericalDisproportion", "Sphericity"),
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_value(name: str, v, rule) -> str | None:
    """The problem with setting ``name = v`` under ``rule``, or None."""
    kind = rule[0]
    if kind == _BOOL:
        return None if isinstance(v, bool) else "must be true or false"
    if kind == "enum":
        return None if v in rule[1] else f"must be one of {', '.join(rule[1])}"
    if kind == "interpolator":
        if v is None or v in INTERPOLATORS or (_is_int(v) and 1 <= v <= 10):
            return None
        return "must be a SimpleITK interpolator name (e.g. sitkBSpline) or 1-10"
    if kind == "weighting":
        return None if v is None or v in WEIGHTINGS else \
            f"must be empty or one of {', '.join(WEIGHTINGS)}"
    if kind == "wavelet":
        import pywt  # when run: only a wavelet setting needs it (extract start-up)
        return None if isinstance(v, str) and v in pywt.wavelist() else \
            "must be a PyWavelets wavelet name (e.g. coif1)"
    if kind == "seq":
        if not isinstance(v, list):
            return "must be a list"
        for item in v:
            problem = _check_value(name, item, (rule[1], rule[2], rule[3], None))
            if problem:
                return f"items {problem[5:] if problem.startswith('must ') else problem}"
        return None
    lo, lo_ex, hi = rule[1], rule[2], rule[3]
    if kind == _INT and not _is_int(v):
        return "must be an integer"
    if kind == _FLOAT and not (_is_int(v) or isinstance(v, float)):
        return "must be a number"
    if kind == _STR and not isinstance(v, str):
        return "must be text"
    if lo is not None and (v <= lo if lo_ex else v < lo):
        return f"must be {'>' if lo_ex else '>='} {lo}"
    if hi is not None and v > hi:
        return f"must be <= {hi}"
    return None


def _check_settings(where: str, settings, rules: dict, source: str) -> None:
    if not isinstance(settings, dict):   # an empty entry ("Original:") is null: write {}
        raise InputError(f"{source}: {where} must be a mapping of setting: value")
    for name, v in settings.items():
        if name not in rules:
            raise InputError(f"{source}: unknown setting '{name}' in {where} (pyradiomics "
                             "settings are case-sensitive, e.g. binWidth)")
        problem = _check_value(name, v, rules[name])
        if problem:
            raise InputError(f"{source}: {where} '{name}' = {v!r} {problem}")


TOP_LEVEL = ("setting", "imageType", "featureClass", "voxelSetting")

# Settings that size the engines' working arrays, capped so that a params file (a user's, or
# one a model bundle carries) cannot ask for memory or time that no image needs. pyradiomics'
# schema bounds none of them from above.
#: Grey levels per region: a texture matrix is levels^2 x angles x 8 bytes, so 5,000 levels
#: already need 0.8 GB per region; IBSI-style binning gives 16-256.
MAX_GREY_LEVELS = 5000
#: Largest texture distance (px): studies use 1-3; distance d adds 4d angles (one matrix each)
#: and (2d + 1)^2 offsets to enumerate, so 1,000,000 would never finish.
MAX_DISTANCE = 32
#: Wavelet decompositions (start_level + level): each adds three full-size images; 10 halve a
#: 1,024-px axis down to one pixel, beyond any ultrasound frame's structure.
MAX_WAVELET_LEVELS = 10
#: LoG sigmas: each is one full-size filtered image kept for every region; studies use 1-5.
MAX_SIGMAS = 16


def parse_params(text: str, source: str = "params") -> dict:
    """Parse a params YAML text and validate it (:func:`validate_params`).

    ``source`` starts every error message: the params file, or the model bundle and field
    that carry the text.

    Raises
    ------
    InputError
        Not YAML (or YAML that needs a Python tag), empty, not a mapping, an unknown
        top-level key, or an invalid entry.
    """
    try:
        params = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:   # PyYAML builds nested collections recursively
        raise InputError(f"{source}: not valid params (nested too deeply)") from None
    if not str(text).strip() or params == {}:
        raise InputError(f"{source}: the params file is empty; it must name imageType and "
                         "featureClass (pyradiomics would silently extract its defaults)")
    if not isinstance(params, dict):
        raise InputError(f"{source}: params must be a mapping with setting/imageType/featureClass")
    unknown = set(params) - set(TOP_LEVEL)
    if unknown:
        raise InputError(f"{source}: unknown top-level keys {sorted(map(str, unknown))}; "
                         "pyradiomics params have setting, imageType, featureClass (and "
                         "voxelSetting)")
    validate_params(params, source)
    check_resources(params, source)
    return params


def check_resources(params: dict, source: str = "params") -> None:
    """Refuse settings that would size the engines' work beyond what any image needs (the
    caps above), one line with the numbers; the resampled grid, which depends on the image,
    is checked at extraction (:meth:`.features.FeatureExtractor.check_input`).

    Raises
    ------
    InputError
    """
    base = params.get("setting") or {}
    groups = [("setting", base)]      # an image type's own settings override the general ones
    groups += [(f"imageType {k}", {**base, **v}) for k, v in
               (params.get("imageType") or {}).items() if isinstance(v, dict) and v]
    for where, st in groups:
        n = st.get("binCount")
        if n is not None and n > MAX_GREY_LEVELS:
            raise InputError(f"{source}: {where} 'binCount' = {n} grey levels is more than "
                             f"{MAX_GREY_LEVELS:,}: the texture matrices would need "
                             f"~{4 * 8 * n ** 2 / 2 ** 30:,.1f} GB per region; use at most "
                             f"{MAX_GREY_LEVELS:,} (16-256 is usual)")
        d = max(st.get("distances") or [0])
        if d > MAX_DISTANCE:
            raise InputError(f"{source}: {where} 'distances' up to {d} px is more than "
                             f"{MAX_DISTANCE}: each distance d adds 4d angles and (2d + 1)^2 "
                             "offsets to the texture matrices (1-3 is usual)")
        levels = int(st.get("start_level", 0)) + int(st.get("level", 1))
        if levels > MAX_WAVELET_LEVELS:
            raise InputError(f"{source}: {where} wavelet 'start_level' + 'level' = {levels} "
                             f"is more than {MAX_WAVELET_LEVELS} decompositions (each adds "
                             "three full-size images)")
        sigmas = st.get("sigma") or []
        if len(sigmas) > MAX_SIGMAS:
            raise InputError(f"{source}: {where} 'sigma' lists {len(sigmas)} values, more than "
                             f"{MAX_SIGMAS} (each is one full-size LoG image)")


def validate_params(params: dict, source: str = "params") -> None:
    """Raise :class:`~HER2RadiomicsLib.errors.InputError` naming the first invalid entry.

    Accepts exactly what pyradiomics 3.0.1's schema accepts (tested side by side).
    """
    if not isinstance(params, dict):
        raise InputError(f"{source}: params must be a mapping with setting/imageType/featureClass")
    for key, rules in (("setting", SETTINGS), ("voxelSetting", VOXEL_SETTINGS)):
        if key in params:
            _check_settings(key, params[key], rules, source)
    if "imageType" in params:
        types = params["imageType"]
        if not isinstance(types, dict):
            raise InputError(f"{source}: imageType must be a mapping (e.g. Original: {{}})")
        for name, custom in types.items():
            if name not in IMAGE_TYPES:
                raise InputError(f"{source}: image type '{name}' is not recognised; choose "
                                 f"from {', '.join(IMAGE_TYPES)}")
            _check_settings(f"imageType {name}", custom, SETTINGS, source)
    if "featureClass" in params:
        classes = params["featureClass"]
        if not isinstance(classes, dict):
            raise InputError(f"{source}: featureClass must be a mapping (e.g. glcm: [])")
        for cls, names in classes.items():
            if cls not in FEATURE_NAMES:
                raise InputError(f"{source}: feature class '{cls}' is not recognised; choose "
                                 f"from {', '.join(FEATURE_NAMES)}")
            if names is None:
                continue
            if not isinstance(names, list):
                raise InputError(f"{source}: featureClass {cls} must list feature names "
                                 "(or be empty for all)")
            wrong = [n for n in names if n not in FEATURE_NAMES[cls]]
            if wrong:
                raise InputError(f"{source}: {cls} has no feature {wrong[0]!r}")
