"""The requirement floors: one source (pyproject.toml), mirrored by the Slicer installer's list.

Fast checks only (well under a second): every floor is one ``>=`` with a reason comment naming
that version, per-Python floors are ``python_version`` markers that the standard-library
evaluator in ``HER2RadiomicsLib/requirements.py`` reads as ``packaging`` does, each package has
exactly one floor on every Python, and the installer's list for a Python is marker-free. That
the floors really install and run (wheels only, every package at exactly its floor, the
shipped bundle's prediction) is the slow ``scripts/check_install.py --floors`` of
``make install-check``.
"""
import re
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from HER2RadiomicsLib import requirements as R

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
#: the Pythons a floor is resolved for: Slicer's (3.9, 3.12) and those between and after
PYTHONS = [(3, 9), (3, 10), (3, 11), (3, 12), (3, 13)]


def _deps_with_comments() -> list:
    """``(requirement, comment)`` for each line of [project] dependencies, read as text
    (tomllib drops comments)."""
    text = PYPROJECT.read_text()
    project = text[text.index("[project]\n"):]
    block = project[project.index("\ndependencies = [") + 1:]
    block = block[:block.index("\n]")]
    out = []
    for line in block.splitlines()[1:]:
        m = re.match(r'\s*"([^"]+)",\s*(?:#\s*(.*))?$', line)
        if m:
            out.append((m.group(1), (m.group(2) or "").strip()))
    return out


def _floor(requirement: str) -> Version:
    (spec,) = Requirement(requirement).specifier
    return Version(spec.version)


def test_every_floor_is_one_lower_bound_with_its_reason():
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    lines = _deps_with_comments()
    assert [r for r, _ in lines] == deps, "every dependency on its own line"
    for req, comment in lines:
        specs = list(Requirement(req).specifier)
        assert len(specs) == 1 and specs[0].operator == ">=", req
        # the reason names the floor it explains ("1.6: validate_data ...")
        assert comment.startswith(f"{specs[0].version}:") and len(comment) > 12, \
            f"{req}: the comment must start with '{specs[0].version}:' and say why"


def test_installer_list_mirrors_pyproject_markers_included():
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    norm = lambda r: str(Requirement(r))  # noqa: E731  (spacing and quoting normalised)
    assert [norm(r) for r in R.names(python="all")] == [norm(r) for r in deps]
    for req, mode, why in R.ALL_REQUIREMENTS:
        name = canonicalize_name(Requirement(req).name)
        assert mode == (R.SLICER if name in {"numpy", "simpleitk"} else R.PIP), req
        assert why.strip(), req


@pytest.mark.parametrize("python", PYTHONS, ids=lambda p: "%d.%d" % p)
def test_one_floor_per_package_on_every_python(python):
    env = {"python_version": "%d.%d" % python, "python_full_version": "%d.%d.0" % python}
    chosen = {}
    for req, _, _ in R.ALL_REQUIREMENTS:
        marker = Requirement(req).marker
        # the stdlib evaluator the installer uses agrees with packaging's
        assert R.applies(req, python) == (marker is None or marker.evaluate(env)), req
        if R.applies(req, python):
            name = canonicalize_name(Requirement(req).name)
            assert name not in chosen, f"two floors of {name} on {python}"
            chosen[name] = _floor(req)
    names = {canonicalize_name(Requirement(r).name) for r, _, _ in R.ALL_REQUIREMENTS}
    assert set(chosen) == names, f"no floor on {python}: {names - set(chosen)}"
    # the pipeline imports sklearn.utils.validation.validate_data, new in scikit-learn 1.6:
    # an older floor let another extension's 1.3-1.5 break every prediction
    src = (ROOT / "HER2RadiomicsLib" / "modelling" / "selector_base.py").read_text()
    assert re.search(r"^from sklearn\.utils\.validation import [\w, ]*\bvalidate_data\b", src,
                     re.M)
    assert chosen["scikit-learn"] >= Version("1.6"), chosen["scikit-learn"]
    # skops 0.10 imports scikit-learn internals that 1.6 removed
    assert chosen["skops"] >= Version("0.11")


def test_marker_outside_python_version_is_refused():
    with pytest.raises(ValueError, match="python_version"):
        R.applies("numpy>=2; sys_platform=='win32'")
    assert R.applies("numpy>=2") and R.split_marker("a>=1; python_version<'3.12'") == \
        ("a>=1", "python_version<'3.12'")
    assert str(Marker("python_version<'3.12'")) == 'python_version < "3.12"'  # what pip reads


def test_installer_gets_this_pythons_floors_without_markers():
    assert R.REQUIREMENTS == R.for_python(sys.version_info[:2])
    assert all(";" not in r for r, _, _ in R.REQUIREMENTS)
    assert R.names(R.SLICER) == [r for r, m, _ in R.REQUIREMENTS if m == R.SLICER]


@pytest.mark.parametrize("python", [(3, 9), (3, 12)], ids=["slicer5.8", "slicer5.10"])
def test_floor_versions_count_as_installed(monkeypatch, python):
    """In a Slicer whose Python holds exactly its floors, nothing is asked again (a marker
    left in the string would make the other Python's floor count as missing forever)."""
    sys.path.insert(0, str(ROOT / "HER2Radiomics"))
    from HER2RadiomicsModuleLib import dependencies as D
    floors = {canonicalize_name(Requirement(r).name): str(_floor(r))
              for r, _, _ in R.for_python(python)}
    monkeypatch.setattr(D.importlib.metadata, "version",
                        lambda name: floors[canonicalize_name(name)])
    assert [r for r, _, _ in R.for_python(python) if not D._satisfied(r)] == []
    below = {**floors, "scikit-learn": "1.5.2"}
    monkeypatch.setattr(D.importlib.metadata, "version",
                        lambda name: below[canonicalize_name(name)])
    assert [r for r, _, _ in R.for_python(python) if not D._satisfied(r)] == \
        [r for r, _, _ in R.for_python(python) if r.startswith("scikit-learn")]


def test_check_install_floors_are_the_declared_ones():
    """The slow check installs exactly these pins (numpy's inside Slicer's line)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import check_install as C
    for version in C.TARGETS:
        pins = C.floor_requirements(version)
        py = tuple(int(x) for x in version.split("."))
        assert [p.split("==")[0] for p in pins] == \
            [Requirement(r).name for r, _, _ in R.for_python(py)]
        assert [Version(p.split("==")[1]) for p in pins] == \
            [_floor(r) for r, _, _ in R.for_python(py)]
