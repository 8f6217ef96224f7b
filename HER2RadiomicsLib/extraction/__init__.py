"""Feature extraction: our own radiomics engine (numpy only, pyradiomics-exact definitions).

Toward replacing pyradiomics at run time: :mod:`.engine` computes every feature class on a 2D
image and region, :mod:`.native` reads pyradiomics params (filters, normalisation,
resampling) and returns pyradiomics' keys; tested against pyradiomics 3.0.1 to 1e-9 on every
shipped preset. Chosen with ``--engine native``; pyradiomics is still the default.
"""
