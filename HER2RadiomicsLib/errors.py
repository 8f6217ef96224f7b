"""User-facing errors: each carries a one-line message that names the file and the problem.

The CLI prints ``error: <message>`` and exits with code 2 for these; batch mode records them in
the error table and carries on with the other cases.
"""


class HER2Error(Exception):
    """Base class of every error the library raises for bad input or settings."""


class InputError(HER2Error, ValueError):
    """An input file is unreadable, inconsistent or unsuitable."""


class SpacingUnknownError(InputError):
    """A physical-units operation was asked for on an image whose pixel spacing is unknown."""

    def __init__(self, path, operation: str):
        super().__init__(
            f"{path}: pixel spacing is unknown, so {operation} (in mm) cannot be computed; "
            "supply it with --spacing-mm X Y (or spacing_x_mm/spacing_y_mm manifest columns, "
            "or a <image>.json sidecar with {\"spacing_mm\": [x, y]}), or use a calibrated DICOM")
        self.path = path
        self.operation = operation


class ManifestError(InputError):
    """A manifest has problems; all of them are listed, one line each, before any work."""

    MAX_LINES = 50

    def __init__(self, path, problems: list):
        self.path = path
        self.problems = list(problems)
        lines = [f"{path}: {p}" for p in self.problems[:self.MAX_LINES]]
        if len(self.problems) > self.MAX_LINES:
            lines.append(f"{path}: ... and {len(self.problems) - self.MAX_LINES} more problems")
        super().__init__("\n".join(lines))


class ModelError(HER2Error):
    """A model file (weights, bundle) is missing, corrupt, untrusted or mismatched."""


class Cancelled(HER2Error):
    """The user cancelled a running job (finished work is kept)."""


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line: pandas, PyYAML and JSON errors break their messages over
    lines (a CSV tokenising error ends in a line break), and the CLI prints one ``error:`` line
    per line of a message."""
    return " ".join(str(exc).split()) or type(exc).__name__
