"""Bundles written by earlier releases and by newer scikit-learn: the module paths their classes
were saved under, and the attribute scikit-learn 1.6/1.7 needs on a newer LogisticRegression.
"""
from __future__ import annotations

import contextlib
import sys


# Where allow-listed types lived before the library was grouped into packages: bundles saved
# then name these modules, and load through aliases of the new ones (same classes).
LEGACY_MODULES = {
    "HER2RadiomicsLib.modeling": "HER2RadiomicsLib.modelling.transformers",
    "HER2RadiomicsLib.harmonization": "HER2RadiomicsLib.modelling.harmonization",
    "HER2RadiomicsLib.nomogram": "HER2RadiomicsLib.modelling.nomogram",
    "HER2RadiomicsLib.study": "HER2RadiomicsLib.modelling.study",
}


#: classes that moved between modules after bundles naming the old path were written; the old
#: module still exports the class, so skops finds it there
LEGACY_TYPES = {
    "HER2RadiomicsLib.modelling.study.HierarchicalClassifier":
        "HER2RadiomicsLib.modelling.pipelines.HierarchicalClassifier",
    "HER2RadiomicsLib.modelling.transformers.LassoSelector":
        "HER2RadiomicsLib.modelling.lasso.LassoSelector",
}


def current_type_name(name: str) -> str:
    """A type name with a pre-0.2 module path replaced by the module the class lives in now."""
    module, _, cls = name.rpartition(".")
    name = f"{LEGACY_MODULES.get(module, module)}.{cls}"
    return LEGACY_TYPES.get(name, name)


@contextlib.contextmanager
def _legacy_module_aliases():
    """Make the old module paths importable while skops loads a model, then remove them."""
    import importlib
    added = []
    for old, new in LEGACY_MODULES.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)
            added.append(old)
    try:
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)



def _for_older_sklearn(model) -> None:
    """Let scikit-learn 1.6 / 1.7 run a LogisticRegression saved by 1.8 or newer.

    1.8 removed ``multi_class``; 1.6 and 1.7 (1.6.1 is the last release for Python 3.9, i.e.
    Slicer 5.8) still read it in ``predict_proba``, so a newer bundle fails there with an
    AttributeError. The missing attribute gets 1.5-1.7's default, ``"deprecated"`` (their
    'auto': sigmoid for two classes, softmax for more, as 1.8 always does).
    """
    import sklearn
    from sklearn.linear_model import LogisticRegression

    from .bundle_checks import _objects
    if tuple(int(x) for x in sklearn.__version__.split(".")[:2] if x.isdigit()) >= (1, 8):
        return
    for _, obj in _objects(model):
        if isinstance(obj, LogisticRegression) and "multi_class" not in vars(obj):
            obj.multi_class = "deprecated"
