"""Clinical values for a bundle's nomogram: parsed from ``name=value`` text (command line, the
Slicer panel and CLI) and checked before use.

A name the nomogram does not take, a value that is not a number or lies outside its plausible
range (:data:`CLINICAL_RANGES`), or a non-0/1 value for a predictor the nomogram learnt as 0/1,
is refused in one line naming the value and what is accepted; a missing one leaves the nomogram
out with a warning and a QC note (:mod:`.predict`), never silently.
"""
from __future__ import annotations

import math

import numpy as np
import yaml

from ..errors import InputError

#: Plausible values of the clinical inputs our recipes use: ``name: (low, high, unit)``, both
#: ends accepted except a lesion size of 0. ER and PR are accepted as % of stained nuclei or
#: as 0/1 status (the synthetic cohort's and the papers' form); a nomogram that learnt 0/1
#: refuses anything else. Outside these, the value is a typo or a unit mix-up (age in months,
#: size in cm or in µm), not a patient.
CLINICAL_RANGES = {
    "age": (10.0, 110.0, "years"),
    "menopausal": (0.0, 1.0, "0 = pre-, 1 = post-menopausal"),
    "er": (0.0, 100.0, "% of stained nuclei, or 0/1 status"),
    "pr": (0.0, 100.0, "% of stained nuclei, or 0/1 status"),
    "ki67": (0.0, 100.0, "% of stained nuclei"),
    "lesion_size_mm": (0.0, 200.0, "mm, above 0"),
}


def clinical_value(name: str, value, what: str = "--clinical") -> float:
    """One clinical value as a float, refused unless it is a finite number inside its
    plausible range (:data:`CLINICAL_RANGES`; names not listed there need only be finite).

    Raises
    ------
    InputError
        One line naming the value and the accepted range.
    """
    try:
        v = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what}: clinical value {name} = {value!r} is not a number") from None
    if not math.isfinite(v):
        raise InputError(f"{what}: clinical value {name} = {value!r} is not a finite number")
    if name in CLINICAL_RANGES:
        lo, hi, unit = CLINICAL_RANGES[name]
        low_ok = v > lo if name == "lesion_size_mm" else v >= lo
        if not (low_ok and v <= hi):
            raise InputError(f"{what}: clinical value {name} = {v:g} is outside the plausible "
                             f"range {lo:g} to {hi:g} ({unit})")
    return v


def parse_clinical(values, what: str = "--clinical") -> dict:
    """Clinical values for the nomogram from ``"age=52, er=1"`` or ``["age=52", "er=1"]``.

    Shared by the ``predict``/``report`` commands, the Slicer CLI and the panel. Each value is
    checked by :func:`clinical_value`; names are checked against a bundle by
    :func:`clinical_inputs`.
    """
    if isinstance(values, str):
        values = values.replace(";", ",").split(",")
    out = {}
    for part in values or []:
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise InputError(f"{what} {part!r}: expected name=value")
        key, value = part.split("=", 1)
        key = key.strip()
        try:
            float(value)
        except ValueError:
            raise InputError(f"{what} {part!r}: value must be a number") from None
        out[key] = clinical_value(key, value, what)
    return out


def _missing(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or \
        (isinstance(v, float) and math.isnan(v))


def known_clinical_names(bundle) -> list:
    """Clinical names a user may give for ``bundle``: its nomogram's predictors first, then
    its recipe's candidates (a recipe's univariate selection may have dropped some) and the
    names of :data:`CLINICAL_RANGES`. Anything else is a typo (``Ki67``, ``ki-67``)."""
    names = [str(n) for n in bundle.nomogram.predictors[1:]] if bundle.nomogram is not None \
        else []
    names += [str(n) for n in bundle.meta.get("clinical") or []]
    try:
        recipe = yaml.safe_load(bundle.meta.get("recipe_yaml") or "") or {}
        names += [str(n) for n in recipe.get("clinical") or []]
    except Exception:  # noqa: BLE001 -- a recipe text we cannot read adds no names; the rest still apply
        pass
    names += list(CLINICAL_RANGES)
    return list(dict.fromkeys(names))


def clinical_inputs(bundle, values, what: str = "--clinical") -> tuple:
    """The nomogram's clinical inputs from ``values`` (a dict or row), checked.

    Returns ``(inputs, missing)``: ``inputs`` holds every predictor of the bundle's nomogram
    as a float, or is ``None`` when one is missing (or the bundle has no nomogram);
    ``missing`` names the predictors without a value (empty when there is no nomogram).

    Raises
    ------
    InputError
        A name the nomogram does not take (given as a dict, e.g. ``--clinical``), a value
        that is not a number, outside its plausible range, or not 0/1 where the nomogram
        learnt 0/1 — one line naming the value and what is accepted.
    """
    nomo = getattr(bundle, "nomogram", None)
    values = {} if values is None else values
    if nomo is None:
        return None, []
    names = [str(n) for n in nomo.predictors[1:]]
    if isinstance(values, dict):
        known = known_clinical_names(bundle)
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            raise InputError(f"{what}: unknown clinical value(s) {', '.join(unknown)}; known "
                             f"names: {', '.join(known)} (this bundle's nomogram uses "
                             f"{', '.join(names) or 'none'})")
    ranges = dict(zip(nomo.predictors, np.asarray(getattr(nomo, "ranges_", []), float)))
    out, missing = {}, []
    for name in names:
        raw = values.get(name)
        if _missing(raw):
            missing.append(name)
            continue
        v = clinical_value(name, raw, what)
        lo_hi = ranges.get(name)
        if lo_hi is not None and tuple(lo_hi) == (0.0, 1.0) and v not in (0.0, 1.0):
            raise InputError(f"{what}: clinical value {name} = {v:g}: this bundle's nomogram "
                             "learnt it as 0/1 (0 = no, 1 = yes)")
        out[name] = v
    return (None if missing else out), missing
