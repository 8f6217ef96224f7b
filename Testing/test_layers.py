"""The layer rules of docs/architecture.md, read from the source with Python's ``ast``.

1. The library never imports Slicer, Qt, VTK, CTK (nor PythonQt, sitkUtils, trame) outside
   ``station/``, which serves Slicer's core to a browser and is imported only by its command.
2. Inside the library the floors go one way, imaging -> extraction -> segmentation -> readers ->
   modelling -> reports: a module never imports a higher floor, and no module but a command
   module (``commands.py``, ``cli.py``, ``__main__.py``, ``demo.py``) imports a command module.
3. The Slicer layer (``HER2Radiomics/``, ``HER2RadiomicsCLI/``) imports only the library's
   public face, ``HER2RadiomicsLib`` itself, and only the names it exports.

Every import counts, function-local ones included; relative imports are resolved.
"""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = "HER2RadiomicsLib"
# pacs: the archive's package builds on every floor (reads images, extracts, predicts, reports)
# and none builds on it, so it is the top floor
FLOORS = ["imaging", "extraction", "segmentation", "readers", "modelling", "reports", "pacs"]
COMMAND_FILES = {"commands", "cli", "__main__", "demo"}
GUI = {"slicer", "qt", "vtk", "ctk", "PythonQt", "sitkUtils", "trame", "trame_slicer",
       "slicer_core", "vtkmodules", "qSlicerBaseQTCore"}
SLICER_LAYER = ["HER2Radiomics", "HER2RadiomicsCLI"]

#: Imports allowed to break the rules, each with its reason (none today). The test fails on any
#: breach not listed here, and on a listed one that is gone (so the list cannot go stale).
KNOWN: set = set()


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, root: Path) -> list:
    """``(line, module, names)`` for every import statement in the file, function-local ones
    too, with relative modules resolved (``names`` is empty for a plain ``import``)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.append((node.lineno, module, [a.name for a in node.names if a.name != "*"]))
    return out


def _floor(module: str):
    parts = module.split(".")
    if parts[0] != LIB or len(parts) < 2 or parts[1] not in FLOORS:
        return None
    return FLOORS.index(parts[1])


def _is_command(module: str) -> bool:
    return module.split(".")[0] == LIB and module.split(".")[-1] in COMMAND_FILES


def violations(root: Path, face=None) -> set:
    """Every import in ``root``'s library and Slicer layer that breaks one of the rules, one
    ``"importer -> imported"`` per statement (rule 1 and 3 entries say which rule)."""
    found = set()
    for path in sorted((root / LIB).rglob("*.py")):
        importer = module_name(path, root)
        in_station = importer.split(".")[1:2] == ["station"]
        command = _is_command(importer)
        floor = _floor(importer)
        for _, module, names in imports_of(path, root):
            if module.split(".")[0] in GUI and not in_station:
                found.add(f"{importer} -> {module} (Slicer/Qt/VTK outside station)")
            if module.split(".")[0] != LIB or command or in_station:
                continue
            # `from package import name`: name may be a module (a command one, say)
            candidates = [module] + [f"{module}.{n}" for n in names]
            shown = candidates[1] if len(candidates) == 2 and module.count(".") == 1 else module
            bad_command = next((c for c in candidates if _is_command(c)), None)
            target = _floor(module)
            if bad_command:
                found.add(f"{importer} -> {bad_command}")
            elif floor is not None and target is not None and target > floor:
                found.add(f"{importer} -> {shown}")
    for folder in SLICER_LAYER:
        for path in sorted((root / folder).rglob("*.py")):
            importer = module_name(path, root)
            for line, module, names in imports_of(path, root):
                if module.split(".")[0] != LIB:
                    continue
                if module == LIB and (face is None or all(n in face for n in names)):
                    continue           # `import HER2RadiomicsLib`, `from ... import <public>`
                shown = module if module != LIB else f"{LIB}.{','.join(names)}"
                found.add(f"{importer} -> {shown} (not the public face, line {line})")
    return found


def _face():
    sys.path.insert(0, str(ROOT))
    import HER2RadiomicsLib
    return set(HER2RadiomicsLib.__all__)


def test_the_source_keeps_the_layer_rules():
    found = violations(ROOT, _face())
    assert found - KNOWN == set(), sorted(found - KNOWN)
    assert KNOWN - found == set(), f"fixed: remove from KNOWN {sorted(KNOWN - found)}"


def test_the_checker_catches_each_kind_of_bad_import(tmp_path):
    """The same checker on a planted tree: each rule's breach is reported."""
    files = {
        f"{LIB}/__init__.py": "",
        f"{LIB}/imaging/__init__.py": "",
        f"{LIB}/imaging/io.py": "def f():\n    import slicer\n    from ..reports import case\n",
        f"{LIB}/modelling/predict.py": "from . import commands\nfrom ..imaging import io\n",
        f"{LIB}/modelling/commands.py": "from ..reports import case\n",
        f"{LIB}/station/web.py": "import slicer\nfrom ..segmentation import commands\n",
        "HER2Radiomics/HER2Radiomics.py": ("from HER2RadiomicsLib import load_bundle\n"
                                          "from HER2RadiomicsLib.imaging import io\n"),
        "HER2RadiomicsCLI/HER2RadiomicsCLI.py": "def main():\n    import HER2RadiomicsLib.cli\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = violations(tmp_path, face={"load_bundle"})
    assert "HER2RadiomicsLib.imaging.io -> slicer (Slicer/Qt/VTK outside station)" in found
    assert "HER2RadiomicsLib.imaging.io -> HER2RadiomicsLib.reports.case" in found  # higher floor
    assert "HER2RadiomicsLib.modelling.predict -> HER2RadiomicsLib.modelling.commands" in found
    assert any(f.startswith("HER2Radiomics.HER2Radiomics -> HER2RadiomicsLib.imaging")
               for f in found)
    assert any(f.startswith("HER2RadiomicsCLI.HER2RadiomicsCLI -> HER2RadiomicsLib.cli")
               for f in found)
    # what is allowed: a command importing anything, station importing Slicer, a lower floor,
    # the public face's names
    assert not any(f.startswith(("HER2RadiomicsLib.modelling.commands",
                                 "HER2RadiomicsLib.station")) for f in found)
    assert not any("load_bundle" in f or "modelling.predict -> HER2RadiomicsLib.imaging" in f
                   for f in found)
