"""Feature extraction: our own radiomics engine (numpy only, pyradiomics-exact definitions).

:mod:`.engine` computes every feature class on a 2D image and region (one module per class,
each with its formulas), :mod:`.multi` computes several overlapping regions of one image in
one pass, :mod:`.native` reads pyradiomics params (filters, normalisation, resampling) and
returns pyradiomics' keys, and :mod:`.params` validates params files with pyradiomics' schema
rules. Tested against pyradiomics 3.0.1 to 1e-9 on every shipped preset where pyradiomics is
installed, and to 1e-11 against its committed values everywhere
(``Testing/data/engine_reference``); the default engine everywhere (``--engine pyradiomics``
selects the optional reference engine).
"""
#: version of the feature values: bumped whenever any value the engine returns changes, so
#: bundles can tell whether features computed now equal those they were trained on
ENGINE_VERSION = "1.0.0"
