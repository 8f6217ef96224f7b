"""Static contracts of the Slicer layer that CI can check without Slicer:

- the .ui and the widget code agree (every ``self.ui.<name>`` exists with the expected class;
  every ``SlicerParameterName`` is a typed parameter-node field of a compatible type);
- the scripted CLI's XML parameters and its argparse definitions are the same;
- CMake lists every file of the extension; requirements match pyproject.toml;
- the dependency installer never replaces Slicer's packages and builds nothing from source;
- nothing heavy is imported when Slicer loads the module.
"""
import ast
import re
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "HER2Radiomics" / "HER2Radiomics.py"
UI = ROOT / "HER2Radiomics" / "Resources" / "UI" / "HER2Radiomics.ui"
CLI_PY = ROOT / "HER2RadiomicsCLI" / "HER2RadiomicsCLI.py"
CLI_XML = ROOT / "HER2RadiomicsCLI" / "HER2RadiomicsCLI.xml"

# widget name suffix -> acceptable Qt/CTK/MRML classes (Slicer's naming habit)
SUFFIX_CLASSES = {
    "CollapsibleButton": {"ctkCollapsibleButton"},
    "Button": {"QPushButton", "QToolButton"},
    "Selector": {"qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox"},
    "PathLineEdit": {"ctkPathLineEdit"},
    "LineEdit": {"QLineEdit"},
    "ComboBox": {"QComboBox", "ctkComboBox"},
    "CheckBox": {"QCheckBox"},
    "SpinBox": {"QDoubleSpinBox", "QSpinBox", "ctkDoubleSpinBox"},
    "ProgressBar": {"QProgressBar"},
    "Label": {"QLabel"},
    "EditorWidget": {"qMRMLSegmentEditorWidget"},
}
# parameter type -> widget classes the parameterNodeWrapper can bind it to
TYPE_CLASSES = {
    "vtkMRML": {"qMRMLNodeComboBox"},
    "Path": {"ctkPathLineEdit"},
    "float": {"QDoubleSpinBox", "ctkDoubleSpinBox", "ctkSliderWidget"},
    "bool": {"QCheckBox"},
    "str": {"QLineEdit", "QComboBox"},
}


def _ui_widgets():
    tree = ET.parse(UI)
    out = {}
    for w in tree.iter("widget"):
        param = None
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                param = prop.find("string").text
        out[w.get("name")] = (w.get("class"), param)
    return out


def _parameter_fields():
    tree = ast.parse(MODULE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef)
               and n.name == "HER2RadiomicsParameterNode")
    fields = {}
    for st in cls.body:
        if isinstance(st, ast.AnnAssign):
            ann = st.annotation
            full = ast.unparse(ann)
            if isinstance(ann, ast.Subscript):          # Annotated[float, ...]
                ann = ann.slice.elts[0]
            fields[st.target.id] = (ast.unparse(ann), full)
    return fields


def test_every_ui_reference_exists_with_the_expected_class():
    widgets = _ui_widgets()
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text()))
    assert len(used) >= 20
    for name in sorted(used):
        assert name in widgets, f"self.ui.{name} is not in {UI.name}"
        cls = widgets[name][0]
        suffix = next(s for s in SUFFIX_CLASSES if name.lower().endswith(s.lower()))
        assert cls in SUFFIX_CLASSES[suffix], f"{name} is a {cls}"


def test_every_parameter_binding_is_a_typed_field():
    widgets = _ui_widgets()
    fields = _parameter_fields()
    bound = {param: (name, cls) for name, (cls, param) in widgets.items() if param}
    assert len(bound) >= 12
    for param, (name, cls) in bound.items():
        assert param in fields, f"{name} binds unknown parameter {param!r}"
        t, full = fields[param]
        kind = "vtkMRML" if t.startswith("vtkMRML") else t
        assert cls in TYPE_CLASSES[kind], f"{name} ({cls}) cannot hold a {t}"
        if cls == "QComboBox":   # Slicer's combo-box connector needs the choices declared
            assert "Choice(" in full, f"{param} bound to a QComboBox needs a Choice annotation"


def test_ui_scene_connections_and_buttons_start_disabled():
    tree = ET.parse(UI)
    receivers = {c.find("receiver").text for c in tree.iter("connection")}
    widgets = _ui_widgets()
    mrml = {n for n, (c, _) in widgets.items() if c.startswith("qMRML") and n != "HER2Radiomics"}
    assert mrml <= receivers, f"not connected to the scene: {mrml - receivers}"
    for w in tree.iter("widget"):
        if w.get("class") == "QPushButton" and w.get("name") != "cancelButton":
            enabled = [p for p in w.findall("property") if p.get("name") == "enabled"]
            assert enabled and enabled[0].find("bool").text == "false", w.get("name")


def test_module_follows_the_template_roles():
    tree = ast.parse(MODULE.read_text())
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body
               if isinstance(n, ast.ClassDef)}
    assert "ScriptedLoadableModule" in classes["HER2Radiomics"]
    assert "ScriptedLoadableModuleWidget" in classes["HER2RadiomicsWidget"]
    assert "HER2RadiomicsCoreLogic" in classes["HER2RadiomicsLogic"]
    assert "ScriptedLoadableModuleTest" in classes["HER2RadiomicsTest"]
    src = MODULE.read_text()
    assert "@parameterNodeWrapper" in src and "tryWithErrorDisplay" in src
    # the self-test runs the real logic (no skips)
    test = next(n for n in tree.body
                if isinstance(n, ast.ClassDef) and n.name == "HER2RadiomicsTest")
    body = ast.unparse(test)
    for step in ("startAutoSegment", "buildRings", "startFeatureExtraction", "startPrediction",
                 "predict", "saveReport"):
        assert f"logic.{step}(" in body
    assert "skiptest" not in body.lower() and "self.skip" not in body.lower()
    # it runs on a stock Slicer: the library half installs what is missing (as the panel
    # does) instead of returning early; no training, the shipped data instead
    library = ast.unparse(next(f for f in test.body if isinstance(f, ast.FunctionDef)
                               and f.name == "test_HER2Radiomics_Library"))
    assert "ensureDependencies(confirm=" in library and "return" not in library.split(
        "volume, seg, meta = self._loadCase()")[0]
    assert "exampleBundle(" not in body
    for name in ("case.nrrd", "case_mask.nrrd", "case.json", "model_bundle.zip"):
        assert (ROOT / "HER2Radiomics" / "Resources" / "Testing" / name).is_file(), name
    assert "cliRunner(" in body          # features through the scripted CLI, as the panel


# -- scripted CLI -------------------------------------------------------------------------------

def _xml_parameters():
    root = ET.parse(CLI_XML).getroot()
    out = {}
    for group in root.findall("parameters"):
        for p in group:
            if p.tag in ("label", "description"):
                continue
            out[p.find("longflag").text] = {
                "tag": p.tag, "default": (p.find("default").text or "") if p.find("default")
                is not None else None,
                "elements": [e.text for e in p.findall("element")],
                "channel": p.findtext("channel")}
    return out


def _parser():
    sys.path.insert(0, str(CLI_PY.parent))
    import HER2RadiomicsCLI
    return HER2RadiomicsCLI.buildParser()


def test_cli_xml_and_argparse_are_the_same():
    xml = _xml_parameters()
    actions = {a.option_strings[0][2:]: a for a in _parser()._actions if a.option_strings
               and a.option_strings[0] != "-h"}
    assert set(xml) == set(actions)
    for flag, spec in xml.items():
        a = actions[flag]
        if spec["tag"] == "boolean":
            assert a.const is True and a.default is (spec["default"] == "true"), flag
        elif spec["tag"] == "string-enumeration":
            assert list(a.choices) == spec["elements"] and a.default == spec["default"], flag
        elif spec["default"] is not None:
            assert str(a.default) == spec["default"], flag
        else:
            assert a.default is None, flag


def test_cli_has_python_real_shebang_and_progress():
    src = CLI_PY.read_text()
    assert src.startswith("#!/usr/bin/env python-real\n")
    assert "<filter-progress>" in src
    for line in src.splitlines():
        if line.startswith(("import ", "from ")):
            assert not re.search(r"\b(slicer|qt|ctk|vtk)\b", line), line


# -- packaging ----------------------------------------------------------------------------------

def _cmake_list(path):
    text = path.read_text()
    return set(re.findall(r"^\s+([\w./${}]+\.(?:py|ui|png|yaml|pt|json|nrrd|zip))\s*$", text, re.M))


def test_cmake_lists_every_file():
    lib = _cmake_list(ROOT / "HER2RadiomicsLib" / "CMakeLists.txt")
    shipped = {str(p.relative_to(ROOT / "HER2RadiomicsLib")) for p in
               (ROOT / "HER2RadiomicsLib").rglob("*")
               if p.suffix in (".py", ".yaml", ".pt", ".json") and "__pycache__" not in p.parts}
    assert shipped == lib, (shipped ^ lib)
    mod = {m.replace("${MODULE_NAME}", "HER2Radiomics")
           for m in _cmake_list(ROOT / "HER2Radiomics" / "CMakeLists.txt")}
    files = {str(p.relative_to(ROOT / "HER2Radiomics")) for p in
             (ROOT / "HER2Radiomics").rglob("*")
             if p.suffix in (".py", ".ui", ".png", ".json", ".nrrd", ".zip")
             and "__pycache__" not in p.parts}
    assert files == mod, (files ^ mod)
    top = (ROOT / "CMakeLists.txt").read_text()
    for sub in ("HER2RadiomicsLib", "HER2Radiomics", "HER2RadiomicsCLI"):
        assert f"add_subdirectory({sub})" in top
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY \"Quantification\"",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS \"PyTorch\"",
                "find_package(Slicer REQUIRED)"):
        assert key in top, key
    assert "WITH_SUBDIR" in (ROOT / "HER2RadiomicsLib" / "CMakeLists.txt").read_text()


def test_only_the_module_file_sits_in_the_module_folder():
    """Slicer's scripted-module factory treats every .py in qt-scripted-modules as a module:
    the source folder and the CMake install list put helpers in a package, never beside it."""
    loose = sorted(p.name for p in (ROOT / "HER2Radiomics").glob("*.py"))
    assert loose == ["HER2Radiomics.py"], loose
    installed = {m.replace("${MODULE_NAME}", "HER2Radiomics")
                 for m in _cmake_list(ROOT / "HER2Radiomics" / "CMakeLists.txt")}
    top_level_py = sorted(m for m in installed if m.endswith(".py") and "/" not in m)
    assert top_level_py == ["HER2Radiomics.py"], top_level_py
    assert "HER2RadiomicsModuleLib/__init__.py" in installed


def test_requirements_match_pyproject():
    from HER2RadiomicsLib import requirements as R
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    strip = lambda s: s.split("#")[0].replace(" ", "")  # noqa: E731
    # every entry, per-Python markers included (Testing/test_requirements_floors.py: the rest)
    assert sorted(map(strip, deps)) == sorted(map(strip, R.names(python="all")))
    assert [r.split(">=")[0] for r in R.names(R.SLICER)] == ["numpy", "SimpleITK"]


class Recorder:
    def __init__(self):
        self.calls = []

    def pipEnsure(self, reqs):
        self.calls.append(("ensure", list(reqs)))

    def pipInstall(self, args):
        self.calls.append(("pip", list(args)))

    def installTorch(self, requirement=None):
        self.calls.append(("torch",))


def test_dependency_installer_order_and_never_replaces_slicer_packages(monkeypatch):
    sys.path.insert(0, str(ROOT / "HER2Radiomics"))
    from HER2RadiomicsModuleLib import dependencies as D
    monkeypatch.setattr(D, "_satisfied", lambda r: False)       # a bare Slicer
    asked = []
    rec = Recorder()
    assert D.ensureDependencies(confirm=lambda t: asked.append(t) or True, installer=rec,
                                includeTorch=True)
    # one question, naming what will be installed and why; never pyradiomics (it needs a C
    # compiler and does not build on Python 3.12): the library's own engine extracts
    assert len(asked) == 1 and "PyWavelets>=1.4" in asked[0] and "scikit-learn" in asked[0]
    assert "pyradiomics" not in asked[0].lower()
    flat = [a for c in rec.calls for a in (c[1] if len(c) > 1 else [])]
    assert not any(a.lower().startswith(("numpy", "simpleitk", "pyradiomics")) for a in flat)
    assert not any(c[0] == "pip" for c in rec.calls)       # nothing built from source
    assert rec.calls[0][0] == "ensure" and ("torch",) in rec.calls
    # rings, features, reports: never the multi-GB PyTorch unless the CNN is used
    rec_no_torch = Recorder()
    asked2 = []
    assert D.ensureDependencies(confirm=lambda t: asked2.append(t) or True,
                                installer=rec_no_torch)
    assert ("torch",) not in rec_no_torch.calls and "torch" not in asked2[0]
    # declined: nothing installed
    rec2 = Recorder()
    assert not D.ensureDependencies(confirm=lambda t: False, installer=rec2)
    assert rec2.calls == []
    # all present: no question asked
    monkeypatch.setattr(D, "_satisfied", lambda r: True)
    assert D.ensureDependencies(confirm=lambda t: pytest.fail("asked"), installer=Recorder())


def test_pytorch_is_asked_for_once_with_our_floor_and_fails_in_one_line(monkeypatch):
    """Our own confirmation already named PyTorch: the PyTorch extension must not ask again
    (askConfirmation=False, as SlicerNNUnet), it gets the requirement's floor, and an offline
    install is one error line, not pip's traceback (issue 26, D6)."""
    import subprocess
    import types
    sys.path.insert(0, str(ROOT / "HER2Radiomics"))
    from HER2RadiomicsModuleLib import dependencies as D
    calls = []

    class Logic:
        fail = None

        def torchInstalled(self):
            return False

        def installTorch(self, askConfirmation=False, forceComputationBackend=None,
                         torchVersionRequirement=None, torchvisionVersionRequirement=None):
            calls.append((askConfirmation, torchVersionRequirement))
            if Logic.fail:
                raise Logic.fail
            return types.SimpleNamespace(__version__="2.13.0")
    monkeypatch.setitem(sys.modules, "PyTorchUtils",
                        types.SimpleNamespace(PyTorchUtilsLogic=Logic))
    monkeypatch.setattr(D, "_satisfied", lambda r: not r.startswith("torch"))
    pip = []
    installer = D.SlicerInstaller()
    monkeypatch.setattr(installer, "pipEnsure", lambda reqs: pip.append(reqs))
    asked = []
    assert D.ensureDependencies(confirm=lambda t: asked.append(t) or True, installer=installer,
                                includeTorch=True)
    from HER2RadiomicsLib import requirements as R
    assert len(asked) == 1 and "torch" in asked[0]
    assert calls == [(False, R.TORCH[0].split("torch", 1)[1])] and pip == []
    Logic.fail = subprocess.CalledProcessError(1, ["pip", "install", "torch"],
                                               "Traceback ...\nConnectionError")
    with pytest.raises(RuntimeError) as e:
        installer.installTorch(R.TORCH[0])
    assert "PyTorch could not be installed" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


ALLOWED_AT_IMPORT = {"os", "sys", "logging", "threading", "dataclasses", "pathlib", "typing",
                     "importlib", "hashlib", "json", "tempfile", "numpy", "SimpleITK", "qt", "ctk",
                     "vtk", "slicer",
                     "HER2RadiomicsModuleLib"}


@pytest.mark.parametrize("path", sorted((ROOT / "HER2Radiomics").rglob("*.py")),
                         ids=lambda p: p.name)
def test_module_imports_nothing_installable_at_load(path):
    """Slicer loads the module before asking to install anything: only Slicer's own packages
    (and the standard library) may be imported at module level."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue                            # relative: within the helper package
            names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""]
            for n in names:
                assert n.split(".")[0] in ALLOWED_AT_IMPORT, f"{path.name} imports {n}"


def test_extension_urls_point_at_files_in_the_repository():
    top = (ROOT / "CMakeLists.txt").read_text()
    for url in re.findall(r'"(https://raw\.githubusercontent\.com/[^"]+)"', top):
        rel = url.split("/main/", 1)[1]
        assert (ROOT / rel).exists(), rel


def _widget_methods():
    tree = ast.parse(MODULE.read_text())
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef)
                  and n.name == "HER2RadiomicsWidget")
    return {f.name: f for f in widget.body if isinstance(f, ast.FunctionDef)}


def test_every_action_that_needs_the_library_ensures_dependencies_first():
    """Actions whose logic step imports HER2RadiomicsLib ask for the packages first (the
    reader comparison did not: issue 15, item 9)."""
    sys.path.insert(0, str(ROOT / "HER2Radiomics"))
    lib = ROOT / "HER2Radiomics" / "HER2RadiomicsModuleLib"
    needs = set()
    for file, cls in (("core.py", "HER2RadiomicsCoreLogic"), ("steps.py", "LongSteps")):
        tree = ast.parse((lib / file).read_text())
        logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
        needs |= {f.name for f in logic.body if isinstance(f, ast.FunctionDef)
                  and "HER2RadiomicsLib" in ast.unparse(f) and f.name != "spacingInfo"}
    assert {"readerAgreement", "loadBundle"} <= needs
    checked = 0
    for name, fn in _widget_methods().items():
        src = ast.unparse(fn)
        used = {m for m in needs if f"self.logic.{m}(" in src}
        if name.startswith("on") and used:
            checked += 1
            if "self._bundle" in src and used <= {"predict", "saveReport", "modelCardText",
                                                  "startPrediction"}:
                continue            # needs a loaded bundle: loading it ensured the packages
            if name in ("onPollJob", "_finishAutoSegment", "_finishExtraction",
                        "_finishPrediction"):
                continue            # finishes a job its button started once ensured
            assert "self._ensureDependencies(" in src, (name, used)
            assert src.index("self._ensureDependencies(") < min(
                src.index(f"self.logic.{m}(") for m in used), name
    assert checked >= 4


def test_refilling_the_site_list_keeps_the_saved_site():
    """Clearing the combo box emits currentTextChanged("") and wiped the saved site."""
    src = ast.unparse(_widget_methods()["onLoadBundleButton"])
    clear = src.index("self.ui.siteComboBox.clear()")
    assert src.index("saved = p.site") < clear
    assert src.index("self.ui.siteComboBox.blockSignals(True)") < clear
    assert "self.ui.siteComboBox.blockSignals(wasBlocked)" in src[clear:]


def _fake_slicer(monkeypatch, pip_ensure=None):
    """A stand-in ``slicer`` package recording what the installer asks of it."""
    import types
    calls = []
    slicer = types.ModuleType("slicer")
    slicer.__path__ = []
    slicer.util = types.SimpleNamespace(pip_install=lambda args: calls.append(("pip", args)))
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    if pip_ensure is not None:
        # slicer.packaging: Slicer 5.12 (there is no slicer.pydeps in any Slicer)
        packaging = types.ModuleType("slicer.packaging")
        packaging.pip_ensure = pip_ensure
        monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    else:
        monkeypatch.setitem(sys.modules, "slicer.packaging", None)
    return calls


def test_slicer_installer_pins_slicers_packages_and_does_not_ask_twice(monkeypatch):
    """pip_ensure (Slicer 5.12) is imported explicitly and called after our own question
    (no second prompt, also in self-tests), with a constraints file pinning Slicer's numpy,
    scipy and SimpleITK; older Slicers get pip_install with the same constraints."""
    import importlib.metadata as md
    sys.path.insert(0, str(ROOT / "HER2Radiomics"))
    from HER2RadiomicsModuleLib import dependencies as D

    calls = []

    def pip_ensure(requirements, constraints=None, requester=None, prompt_install=True,
                   skip_in_testing=True):          # Slicer's signature: checked by name
        calls.append(("ensure", (requirements,), dict(
            constraints=constraints, requester=requester, prompt_install=prompt_install,
            skip_in_testing=skip_in_testing)))
    _fake_slicer(monkeypatch, pip_ensure)
    D.SlicerInstaller().pipEnsure(["scikit-learn>=1.3"])
    (_, args, kwargs), = calls
    assert args == (["scikit-learn>=1.3"],)
    assert kwargs["prompt_install"] is False and kwargs["skip_in_testing"] is False
    pins = Path(kwargs["constraints"]).read_text().split()
    assert f"numpy=={md.version('numpy')}" in pins and f"scipy=={md.version('scipy')}" in pins
    assert f"SimpleITK=={md.version('SimpleITK')}" in pins
    calls = _fake_slicer(monkeypatch)                     # Slicer 5.8 / 5.10
    D.SlicerInstaller().pipEnsure(["scikit-learn>=1.3"])
    (kind, args), = calls
    assert kind == "pip" and args[:1] == ["scikit-learn>=1.3"] and args[1] == "-c"
    assert f"numpy=={md.version('numpy')}" in Path(args[2]).read_text()


def _cmake_set(name):
    m = re.search(rf'set\({name} "([^"]*)"\)', (ROOT / "CMakeLists.txt").read_text())
    return m.group(1) if m else None


def test_extensions_index_readiness():
    """What the ExtensionsIndex checks ask for (issue 15, item 10): a licence file named in
    the README, contributors as "Name (Organisation)", a documentation link in the help,
    the CMake floor of the current template, and a catalog entry agreeing with CMake."""
    import json
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert "`LICENSE`" in (ROOT / "README.md").read_text()
    for who in _cmake_set("EXTENSION_CONTRIBUTORS").split(","):
        assert re.fullmatch(r"[^()]+ \([^()]+\)", who.strip()), who
    src = MODULE.read_text()
    block = re.search(r"contributors = \[(.*?)\]", src, re.S).group(1)
    names = re.findall(r'"([^"]+)"', block)
    assert names and all(re.fullmatch(r"[^()]+ \([^()]+\)", n) for n in names), names
    assert not any("team" in n.lower() for n in names)          # roles, not a placeholder
    assert "documentation</a>" in src and "href=" in src
    floor = re.search(r"cmake_minimum_required\(VERSION (\d+\.\d+\.\d+)",
                      (ROOT / "CMakeLists.txt").read_text()).group(1)
    assert tuple(map(int, floor.split("."))) >= (3, 20, 6)
    entry = json.loads((ROOT / "Resources" / "ExtensionsIndex" / "HER2Radiomics.json")
                       .read_text())
    assert entry["build_dependencies"] == _cmake_set("EXTENSION_DEPENDS").split()
    assert entry["category"] == _cmake_set("EXTENSION_CATEGORY")
    assert entry["scm_url"].removesuffix(".git") == _cmake_set("EXTENSION_HOMEPAGE")


def test_embedded_segment_editor_follows_the_module_lifecycle():
    """As Slicer's own Segment Editor module: shortcuts installed on enter; on exit no active
    effect, shortcuts uninstalled and view observations removed (issue 15, item 7)."""
    methods = _widget_methods()
    enter, exit_ = ast.unparse(methods["enter"]), ast.unparse(methods["exit"])
    assert "segmentEditorWidget.installKeyboardShortcuts()" in enter
    for call in ("segmentEditorWidget.setActiveEffect(None)",
                 "segmentEditorWidget.uninstallKeyboardShortcuts()",
                 "segmentEditorWidget.removeViewObservations()"):
        assert call in exit_, call
    assert "singletonSegmentEditorNode(" in ast.unparse(methods["setup"])
    assert "AddNewNodeByClass('vtkMRMLSegmentEditorNode')" not in MODULE.read_text()


def test_module_idioms_as_slicers_own_modules():
    """Reload reloads the helper package (as WebServer does, with importlib), cleanup stops the
    poll timer, a scene close cancels a running job and releases the segment editor, the
    dependencies name what the panel embeds, and the image selector takes colour volumes
    (issue 26, D3 and D8; each checked against Slicer's sources, see docs/slicer.md)."""
    methods = _widget_methods()
    reload_ = ast.unparse(methods["onReload"])
    assert "importlib" in reload_ and "imp." not in reload_
    package = {p.stem for p in (ROOT / "HER2Radiomics" / "HER2RadiomicsModuleLib").glob("*.py")
               if p.stem != "__init__"}
    listed = set(re.search(r"submoduleNames = \[(.*?)\]", reload_).group(1)
                 .replace("'", "").replace(" ", "").split(","))
    assert listed == package
    assert "ScriptedLoadableModuleWidget.onReload(self)" in reload_
    assert "self._timer.stop()" in ast.unparse(methods["cleanup"])
    close = ast.unparse(methods["onSceneStartClose"])
    assert "self._job.cancel()" in close
    assert "segmentEditorWidget.setSegmentationNode(None)" in close
    src = MODULE.read_text()
    deps = re.search(r"self.parent.dependencies = (\[.*?\])", src).group(1)
    assert set(ast.literal_eval(deps)) >= {"Segmentations", "SubjectHierarchy", "Markups"}
    assert re.search(r"inputVolume: Union\[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode\]",
                     src)
    assert "Slicer's DICOM reader does not apply" not in (
        ROOT / "HER2Radiomics" / "HER2RadiomicsModuleLib" / "core.py").read_text()
