"""Feature extraction: our own radiomics engine (numpy only, pyradiomics-exact definitions).

Work in progress toward replacing pyradiomics at run time (issue 12): :mod:`.engine` computes
every feature class the presets use on a 2D image and region (first order, shape2D, GLCM,
GLRLM, GLSZM, GLDM, NGTDM), tested against pyradiomics 3.0.1 to 1e-9. Filters (wavelet, LoG,
square, ...), resampling, normalisation and the params-YAML driver follow.
"""
