"""A cohort manifest read and checked row by row: paths, ids (no formula, path or control
character), spacing and frame values; a bad row fails alone with its row and column named.
"""
from __future__ import annotations

import csv
import math
import unicodedata
from pathlib import Path

from ..errors import InputError, ManifestError, one_line


REQUIRED_COLUMNS = ("case_id", "image")


def read_manifest(path, require_mask: bool = True, empty_mask_ok: bool = False,
                  per_row: bool = False) -> list:
    """Read and validate a manifest once, before any work; rows come back with paths absolute.

    ``require_mask`` needs a ``mask`` column whose files exist; ``empty_mask_ok`` lets a row
    leave it empty (the Slicer CLI then draws the mask with the CNN).

    Every problem is collected (column names, empty or duplicate case IDs, case IDs a
    spreadsheet would run as a formula, files that do not exist, spacing given for one axis
    only or not a positive number, frames and label values that are not integers).

    Parameters
    ----------
    per_row : bool
        False: any problem refuses the whole manifest (all problems listed together).
        True: only problems of the file itself refuse it (unreadable, no rows, missing
        columns); a row with a problem comes back with ``row["_error"]`` (one line naming the
        manifest, the row and the problem) and ``row["_error_file"]`` (the missing file, or
        the manifest) so that a batch records it as that case's error and carries on with
        the others.

    Raises
    ------
    ManifestError
        One line per problem (``<manifest>: row N (case X): <problem>``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: manifest not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows, lines = [], []
            for r in reader:            # the file's own line numbers (blank lines skipped)
                rows.append(r)
                lines.append(reader.line_num)
            cols = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read manifest CSV ({one_line(exc)})") from None
    if not rows:
        raise InputError(f"{path}: manifest has no rows")
    need = list(REQUIRED_COLUMNS) + (["mask"] if require_mask else [])
    missing = [c for c in need if c not in cols]
    if missing:
        raise InputError(f"{path}: manifest lacks column(s) {missing} (has {cols})")
    base = path.resolve().parent
    problems = []
    seen = {}
    for i, r in enumerate(rows):
        r.pop(None, None)                       # cells beyond the header
        for k in list(r):
            r[k] = (r[k] or "").strip() if isinstance(r[k], str) else ""
        cid = r["case_id"]
        where = f"row {lines[i]}" + (f" ({cid[:60]})" if cid else "")
        mine = []
        # one case per name as a file system sees it: letter case and Unicode forms of the
        # same name would be one file on Windows/macOS (masks and parts are named after it)
        key = unicodedata.normalize("NFC", cid).casefold()
        if not cid:
            mine.append("empty case_id")
        elif key in seen:
            mine.append(f"duplicate case_id {cid[:60]!r} (first on row {seen[key]}"
                        + (", differing only in letter case or Unicode form)"
                           if cid not in {rows[j]["case_id"] for j in range(i)} else ")"))
        else:
            mine += case_id_problems(cid)
        seen.setdefault(key, lines[i])
        bad_file = None
        for col in ("image", "mask", "fov"):
            if r.get(col):
                p = Path(r[col])
                r[col] = str(p if p.is_absolute() else (base / p))
                if (col != "mask" or require_mask) and not Path(r[col]).is_file():
                    mine.append(f"{col} file not found: {r[col]}")
                    bad_file = bad_file or r[col]
            elif col == "image" or (col == "mask" and require_mask and not empty_mask_ok):
                mine.append(f"empty {col}")
        mine += _row_value_problems(r)
        problems += [f"{where}: {m}" for m in mine]
        if mine:
            r["_error"] = f"{path}: {where}: {'; '.join(mine)}"
            r["_error_file"] = bad_file or str(path)     # the file to fix
    if problems and not per_row:
        raise ManifestError(path, problems)
    return rows


#: first characters that make a spreadsheet read a cell as a formula (CSV injection)
FORMULA_CHARS = ("=", "+", "-", "@", "\t", "\r")
#: longest case_id: it names files (parts, masks); 200 leaves room within a 255-byte file name
MAX_CASE_ID = 200


def case_id_problems(cid: str, names_files: bool = True) -> list:
    """Why a case id (or a reader name, ``names_files=False`` when it names no file of its
    own) cannot be used; [] when it can."""
    out = []
    if any(c in cid for c in "/\\") or cid in (".", ".."):
        out.append(f"case_id {cid[:60]!r} must not contain path separators")
    elif names_files and (any(c in cid for c in '<>:"|?*') or cid.endswith((".", " "))):
        # names files (masks, parts); Windows, where Slicer mostly runs, refuses these
        out.append(f"case_id {cid[:60]!r} contains a character Windows file names cannot "
                   "hold (< > : \" | ? * or a trailing dot); rename the case")
    out += text_cell_problems(cid, "case_id", "case")
    if len(cid) > MAX_CASE_ID:
        out.append(f"case_id of {len(cid)} characters is longer than {MAX_CASE_ID} (it names "
                   "the case's files)")
    return out


def text_cell_problems(text: str, what: str = "case_id", rename: str = "case") -> list:
    """Control characters, or a start a spreadsheet would run as a formula, in an id."""
    out = []
    if any(ord(c) < 32 for c in text):
        out.append(f"{what} {text[:60]!r} contains control characters")
    if text.startswith(FORMULA_CHARS) and not _is_number(text):
        out.append(f"{what} {text[:60]!r} starts with {text[0]!r}, which a spreadsheet "
                   f"opening the result tables would run as a formula; rename the {rename}")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _row_value_problems(r: dict) -> list:
    out = []
    sx, sy = r.get("spacing_x_mm", ""), r.get("spacing_y_mm", "")
    if bool(sx) != bool(sy):
        out.append("spacing_x_mm and spacing_y_mm must be given together (one is empty)")
    for col, v in (("spacing_x_mm", sx), ("spacing_y_mm", sy)):
        if v:
            try:
                f = float(v)
                if not (math.isfinite(f) and f > 0):
                    raise ValueError
            except ValueError:
                out.append(f"{col} {v!r} is not a positive number of mm")
    if r.get("frame"):
        if not r["frame"].isdigit():
            out.append(f"frame {r['frame']!r} is not a frame number (0, 1, 2, ...)")
    if r.get("label"):
        v = r["label"]
        if not v.isdigit() or int(v) < 1:
            hint = ("; class labels (benign/malignant, HER2 status) belong in another column, "
                    "e.g. 'diagnosis'") if not v.lstrip("-").replace(".", "").isdigit() else ""
            out.append(f"label {v!r}: the 'label' column is the mask's label value, a positive "
                       f"integer{hint}")
    return out
