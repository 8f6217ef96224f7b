"""Feature extraction: our own radiomics engine (numpy only, pyradiomics-exact definitions).

Work in progress toward replacing pyradiomics at run time (issue 12): :mod:`.engine` computes
the original-image first-order and GLCM features and is tested against pyradiomics 3.0.1 to
1e-9; the other feature classes, filters and resampling follow.
"""
