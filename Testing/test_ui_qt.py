"""The panel's .ui loaded by real Qt (PySide6's QUiLoader, offscreen), and rendered.

CTK and MRML widgets do not exist outside Slicer: each is registered as a stand-in of the
same class name built on its nearest Qt base (collapsible button -> group box, node combo box
-> combo box, path line edit -> line edit, Segment Editor -> a labelled placeholder). What this
proves: Qt parses the file, every custom widget is declared with a base Qt knows, every widget
the module code uses exists under its name with the class the .ui declares, and every
``SlicerParameterName`` names a field of the parameter node. What it cannot prove: how the
real CTK/MRML widgets look or behave (the rendering says "stand-in" on those).

``python Testing/test_ui_qt.py OUT.png`` writes the 450-px rendering shown in docs/slicer.md.
"""
from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets")
from PySide6.QtCore import QFile, QObject, Property  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "HER2Radiomics" / "Resources" / "UI" / "HER2Radiomics.ui"
MODULE = ROOT / "HER2Radiomics" / "HER2Radiomics.py"
WIDTH_PX = 450


class _Collapsible(QtWidgets.QGroupBox):
    """ctkCollapsibleButton stand-in: a titled box (its ``text`` is the title)."""

    def _get(self):
        return self.title()

    def _set(self, value):
        self.setTitle(value)

    text = Property(str, _get, _set)


class _NodeCombo(QtWidgets.QComboBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.addItem("(MRML node: stand-in)")


class _SegmentEditor(QtWidgets.QLabel):
    def __init__(self, parent=None):
        super().__init__("Segment Editor (Slicer widget: stand-in)", parent)
        self.setMinimumHeight(120)
        self.setFrameShape(QtWidgets.QFrame.Shape.Box)


STAND_INS = {"ctkCollapsibleButton": _Collapsible, "ctkPathLineEdit": QtWidgets.QLineEdit,
             "qMRMLWidget": QtWidgets.QWidget, "qMRMLNodeComboBox": _NodeCombo,
             "qMRMLCheckableNodeComboBox": _NodeCombo,
             "qMRMLSegmentEditorWidget": _SegmentEditor}


def _declared_custom_widgets():
    root = ET.parse(UI).getroot()
    return {c.findtext("class"): c.findtext("extends")
            for c in root.iter("customwidget")}


def _widget_classes():
    return {w.get("name"): w.get("class") for w in ET.parse(UI).getroot().iter("widget")}


def load_panel():
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    loader = QUiLoader()
    for name, base in STAND_INS.items():
        # QUiLoader creates a custom widget by the class name the .ui gives
        loader.registerCustomWidget(type(name, (base,), {}))
    f = QFile(str(UI))
    assert f.open(QFile.OpenModeFlag.ReadOnly)
    try:
        widget = loader.load(f)
    finally:
        f.close()
    assert widget is not None, loader.errorString()
    return app, widget


def render(widget, path):
    for box in widget.findChildren(QtWidgets.QGroupBox):
        box.setVisible(True)
    widget.setFixedWidth(WIDTH_PX)
    widget.adjustSize()
    image = widget.grab()
    assert image.save(str(path))
    return image


def _parameter_fields():
    import ast
    tree = ast.parse(MODULE.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef)
                and n.name == "HER2RadiomicsParameterNode")
    return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}


def test_every_custom_widget_extends_a_base_qt_knows():
    declared = _declared_custom_widgets()
    assert set(declared) == set(STAND_INS)
    known = set(declared) | {"QWidget", "QComboBox", "QLineEdit", "QGroupBox"}
    for cls, base in declared.items():
        assert base in known, (cls, base)
        assert base == "QWidget" or base in declared, (cls, base)   # ctk/qMRML bases only


def test_real_qt_loads_every_widget_the_module_uses(tmp_path):
    app, widget = load_panel()
    classes = _widget_classes()
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE.read_text()))
    assert len(used) >= 20
    for name in sorted(used):
        child = widget.findChild(QObject, name)
        assert child is not None, f"Qt did not create self.ui.{name}"
        assert child.metaObject().className() == classes[name], name
    bound = {}
    for child in widget.findChildren(QObject):
        param = child.property("SlicerParameterName")
        if param:
            bound[child.objectName()] = param
    assert len(bound) >= 12                      # the dynamic property reached Qt
    fields = _parameter_fields()
    missing = {w: p for w, p in bound.items() if p not in fields}
    assert not missing, missing
    image = render(widget, tmp_path / "panel.png")
    assert image.width() == WIDTH_PX and image.height() > 400
    qimg = image.toImage()
    colours = {qimg.pixel(x, y) for x in range(0, WIDTH_PX, 15)
               for y in range(0, image.height(), 15)}
    assert len(colours) > 3                      # something was drawn


if __name__ == "__main__":
    _, w = load_panel()
    render(w, sys.argv[1] if len(sys.argv) > 1 else "panel.png")
