"""How a feature column is coded in a DICOM SR: IBSI codes where the IBSI defines the feature
as pyradiomics computes it, otherwise the private scheme ``99H2R``.

A column ``<region>__<image type>_<class>_<feature>`` (``tumor__wavelet-LH_glcm_Contrast``)
becomes one numeric measurement in the region's measurement group:

* concept name: ``(IBSI code, "IBSI", IBSI name)`` from :data:`IBSI` (codes of the IBSI
  reference manual, Zwanenburg et al., Radiology 2020), else
  ``(private_value("<class>_<feature>"), "99H2R", "<class> <feature>")`` — pyradiomics' name;
* measurement method (SCT 370129005): ``(private_value("<image type>"), "99H2R",
  "<image type> image")`` (``original``, ``wavelet-LH``, ``log-sigma-1-0-mm-3D``, ...).

A private code value is the name itself when it fits DICOM's 16-character Code Value, else
``h`` + the first 15 hex digits of the name's SHA-256 (:func:`private_value`); the code meaning
always carries the full name. (A longer value would need Long Code Value, which highdicom's own
SR reader, among others, does not read.)

Deliberately private (not IBSI) though IBSI names a feature of the same name: first-order
``Kurtosis`` (pyradiomics' is IBSI's excess kurtosis + 3), ``TotalEnergy`` (pyradiomics only),
GLCM ``MCC`` (not in IBSI) and every ``shape2D`` feature (IBSI's morphology is 3D).
"""
from __future__ import annotations

import hashlib

#: The private coding scheme of this library (DICOM reserves designators starting "99").
PRIVATE = "99H2R"
IBSI_SCHEME = "IBSI"

#: (pyradiomics class, feature) -> (IBSI code, IBSI name)
IBSI = {
    ("firstorder", "Mean"): ("Q4LE", "Mean"),
    ("firstorder", "Variance"): ("ECT3", "Variance"),
    ("firstorder", "Skewness"): ("KE2A", "Skewness"),
    ("firstorder", "Median"): ("Y12H", "Median"),
    ("firstorder", "Minimum"): ("1GSF", "Minimum grey level"),
    ("firstorder", "10Percentile"): ("QG58", "10th percentile"),
    ("firstorder", "90Percentile"): ("8DWT", "90th percentile"),
    ("firstorder", "Maximum"): ("84IY", "Maximum grey level"),
    ("firstorder", "InterquartileRange"): ("SALO", "Interquartile range"),
    ("firstorder", "Range"): ("2OJQ", "Range"),
    ("firstorder", "MeanAbsoluteDeviation"): ("4FUA", "Mean absolute deviation"),
    ("firstorder", "RobustMeanAbsoluteDeviation"): ("1128", "Robust mean absolute deviation"),
    ("firstorder", "Energy"): ("N8CA", "Energy"),
    ("firstorder", "RootMeanSquared"): ("5ZWQ", "Root mean square"),
    ("firstorder", "Entropy"): ("TLU2", "Intensity histogram entropy"),
    ("firstorder", "Uniformity"): ("BJ5W", "Intensity histogram uniformity"),
    ("glcm", "Autocorrelation"): ("QWB0", "Autocorrelation"),
    ("glcm", "JointAverage"): ("60VM", "Joint average"),
    ("glcm", "ClusterProminence"): ("AE86", "Cluster prominence"),
    ("glcm", "ClusterShade"): ("7NFM", "Cluster shade"),
    ("glcm", "ClusterTendency"): ("DG8W", "Cluster tendency"),
    ("glcm", "Contrast"): ("ACUI", "Contrast"),
    ("glcm", "Correlation"): ("NI2N", "Correlation"),
    ("glcm", "DifferenceAverage"): ("TF7R", "Difference average"),
    ("glcm", "DifferenceEntropy"): ("NTRS", "Difference entropy"),
    ("glcm", "DifferenceVariance"): ("D3YU", "Difference variance"),
    ("glcm", "JointEnergy"): ("8ZQL", "Angular second moment"),
    ("glcm", "JointEntropy"): ("TU9B", "Joint entropy"),
    ("glcm", "Imc1"): ("R8DG", "First measure of information correlation"),
    ("glcm", "Imc2"): ("JN9H", "Second measure of information correlation"),
    ("glcm", "Id"): ("IB1Z", "Inverse difference"),
    ("glcm", "Idn"): ("NDRX", "Normalised inverse difference"),
    ("glcm", "Idm"): ("WF0Z", "Inverse difference moment"),
    ("glcm", "Idmn"): ("1QCO", "Normalised inverse difference moment"),
    ("glcm", "InverseVariance"): ("E8JP", "Inverse variance"),
    ("glcm", "MaximumProbability"): ("GYBY", "Joint maximum"),
    ("glcm", "SumAverage"): ("ZGXS", "Sum average"),
    ("glcm", "SumEntropy"): ("P6QZ", "Sum entropy"),
    ("glcm", "SumSquares"): ("UR99", "Joint variance"),
    ("glrlm", "ShortRunEmphasis"): ("22OV", "Short runs emphasis"),
    ("glrlm", "LongRunEmphasis"): ("W4KF", "Long runs emphasis"),
    ("glrlm", "LowGrayLevelRunEmphasis"): ("V3SW", "Low grey level run emphasis"),
    ("glrlm", "HighGrayLevelRunEmphasis"): ("G3QZ", "High grey level run emphasis"),
    ("glrlm", "ShortRunLowGrayLevelEmphasis"): ("HTZT", "Short run low grey level emphasis"),
    ("glrlm", "ShortRunHighGrayLevelEmphasis"): ("GD3A", "Short run high grey level emphasis"),
    ("glrlm", "LongRunLowGrayLevelEmphasis"): ("IVPO", "Long run low grey level emphasis"),
    ("glrlm", "LongRunHighGrayLevelEmphasis"): ("3KUM", "Long run high grey level emphasis"),
    ("glrlm", "GrayLevelNonUniformity"): ("R5YN", "Grey level non-uniformity (GLRLM)"),
    ("glrlm", "GrayLevelNonUniformityNormalized"):
        ("OVBL", "Normalised grey level non-uniformity (GLRLM)"),
    ("glrlm", "RunLengthNonUniformity"): ("W92Y", "Run length non-uniformity"),
    ("glrlm", "RunLengthNonUniformityNormalized"):
        ("IC23", "Normalised run length non-uniformity"),
    ("glrlm", "RunPercentage"): ("9ZK5", "Run percentage"),
    ("glrlm", "GrayLevelVariance"): ("8CE5", "Grey level variance (GLRLM)"),
    ("glrlm", "RunVariance"): ("SXLW", "Run length variance"),
    ("glrlm", "RunEntropy"): ("HJ9O", "Run entropy"),
    ("glszm", "SmallAreaEmphasis"): ("5QRC", "Small zone emphasis"),
    ("glszm", "LargeAreaEmphasis"): ("48P8", "Large zone emphasis"),
    ("glszm", "LowGrayLevelZoneEmphasis"): ("XMSY", "Low grey level zone emphasis"),
    ("glszm", "HighGrayLevelZoneEmphasis"): ("5GN9", "High grey level zone emphasis"),
    ("glszm", "SmallAreaLowGrayLevelEmphasis"): ("5RAI", "Small zone low grey level emphasis"),
    ("glszm", "SmallAreaHighGrayLevelEmphasis"):
        ("HW1V", "Small zone high grey level emphasis"),
    ("glszm", "LargeAreaLowGrayLevelEmphasis"): ("YH51", "Large zone low grey level emphasis"),
    ("glszm", "LargeAreaHighGrayLevelEmphasis"):
        ("J17V", "Large zone high grey level emphasis"),
    ("glszm", "GrayLevelNonUniformity"): ("JNSA", "Grey level non-uniformity (GLSZM)"),
    ("glszm", "GrayLevelNonUniformityNormalized"):
        ("Y1RO", "Normalised grey level non-uniformity (GLSZM)"),
    ("glszm", "SizeZoneNonUniformity"): ("4JP3", "Zone size non-uniformity"),
    ("glszm", "SizeZoneNonUniformityNormalized"):
        ("VB3A", "Normalised zone size non-uniformity"),
    ("glszm", "ZonePercentage"): ("P30P", "Zone percentage"),
    ("glszm", "GrayLevelVariance"): ("BYLV", "Grey level variance (GLSZM)"),
    ("glszm", "ZoneVariance"): ("3NSA", "Zone size variance"),
    ("glszm", "ZoneEntropy"): ("GU8N", "Zone size entropy"),
    ("gldm", "SmallDependenceEmphasis"): ("SODN", "Low dependence emphasis"),
    ("gldm", "LargeDependenceEmphasis"): ("IMOQ", "High dependence emphasis"),
    ("gldm", "LowGrayLevelEmphasis"): ("TL9H", "Low grey level count emphasis"),
    ("gldm", "HighGrayLevelEmphasis"): ("OAE7", "High grey level count emphasis"),
    ("gldm", "SmallDependenceLowGrayLevelEmphasis"):
        ("EQ3F", "Low dependence low grey level emphasis"),
    ("gldm", "SmallDependenceHighGrayLevelEmphasis"):
        ("JA6D", "Low dependence high grey level emphasis"),
    ("gldm", "LargeDependenceLowGrayLevelEmphasis"):
        ("NBZI", "High dependence low grey level emphasis"),
    ("gldm", "LargeDependenceHighGrayLevelEmphasis"):
        ("9QMG", "High dependence high grey level emphasis"),
    ("gldm", "GrayLevelNonUniformity"): ("FP8K", "Grey level non-uniformity (NGLDM)"),
    ("gldm", "DependenceNonUniformity"): ("Z87G", "Dependence count non-uniformity"),
    ("gldm", "DependenceNonUniformityNormalized"):
        ("OKJI", "Dependence count non-uniformity normalised"),
    ("gldm", "GrayLevelVariance"): ("1PFV", "Grey level variance (NGLDM)"),
    ("gldm", "DependenceVariance"): ("DNX2", "Dependence count variance"),
    ("gldm", "DependenceEntropy"): ("FCBV", "Dependence count entropy"),
    ("ngtdm", "Coarseness"): ("QCDE", "Coarseness"),
    ("ngtdm", "Contrast"): ("65HE", "Contrast (NGTDM)"),
    ("ngtdm", "Busyness"): ("NQ30", "Busyness"),
    ("ngtdm", "Complexity"): ("HDEZ", "Complexity"),
    ("ngtdm", "Strength"): ("1X9X", "Strength"),
}
_BY_IBSI = {code: key for key, (code, _) in IBSI.items()}

#: shape2D features in mm (lengths) and mm2 (areas); every other value is unitless ("1")
#: (ultrasound grey values have no physical unit)
UNITS = {"MeshSurface": ("mm2", "square millimeter"), "PixelSurface": ("mm2", "square millimeter"),
         "Perimeter": ("mm", "millimeter"), "MaximumDiameter": ("mm", "millimeter"),
         "MajorAxisLength": ("mm", "millimeter"), "MinorAxisLength": ("mm", "millimeter"),
         "PerimeterSurfaceRatio": ("/mm", "per millimeter")}
NO_UNITS = ("1", "no units")


def private_value(name: str) -> str:
    """The 99H2R code value of ``name`` (see the module docstring)."""
    if len(name) <= 16:
        return name
    return "h" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:15]


def split_key(key: str) -> tuple:
    """``"wavelet-LH_glcm_Contrast"`` -> ``("wavelet-LH", "glcm", "Contrast")``."""
    rest, _, feature = key.rpartition("_")
    image_type, _, cls = rest.rpartition("_")
    if not (image_type and cls and feature):
        raise ValueError(f"feature key {key!r} is not <image type>_<class>_<feature>")
    return image_type, cls, feature


def feature_code(key: str) -> tuple:
    """``((value, scheme, meaning) of the feature, (value, scheme, meaning) of the image
    type, (UCUM unit, meaning))`` for a feature key (the part of a column after ``__``)."""
    image_type, cls, feature = split_key(key)
    if (cls, feature) in IBSI:
        code, meaning = IBSI[(cls, feature)]
        name = (code, IBSI_SCHEME, meaning)
    else:
        name = (private_value(f"{cls}_{feature}"), PRIVATE, f"{cls} {feature}")
    unit = UNITS.get(feature, NO_UNITS) if cls.startswith("shape") else NO_UNITS
    return name, (private_value(image_type), PRIVATE, f"{image_type} image"), unit


def feature_key(name: tuple, method_meaning: str) -> str:
    """The inverse of :func:`feature_code`: the feature key of a coded measurement, from its
    name ``(value, scheme, meaning)`` and its method's code meaning."""
    value, scheme, meaning = name
    if scheme == IBSI_SCHEME:
        if value not in _BY_IBSI:
            raise ValueError(f"IBSI code {value!r} is not one this library writes")
        cls, feature = _BY_IBSI[value]
    elif scheme == PRIVATE:
        cls, _, feature = meaning.partition(" ")
    else:
        raise ValueError(f"coding scheme {scheme!r} is not IBSI or {PRIVATE}")
    image_type = method_meaning[:-len(" image")] if method_meaning.endswith(" image") \
        else method_meaning
    return f"{image_type}_{cls}_{feature}"
