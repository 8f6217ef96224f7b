"""The ``icc`` command's tables without pandas: a typed read of a plain numeric long table and
the ICC table written as pandas writes it.

Why: on a 1,500-feature table, importing pandas costs more than reading the table with it
(0.36 s against 0.05 s) and more than the ICC computation (``benchmarks/bench_icc.py``).

The read is *checked, not guessed*. :func:`read_long_table` accepts only a table whose every
value pandas' default reader would read exactly as this reader does: UTF-8 without a byte-order
mark, one header row of distinct non-empty names, every row as long as the header, no quote
character inside a value, case and reader columns of plain text (no missing-value markers),
feature columns of plain decimal numbers or empty cells. Anything else (``inf``, ``NA``, ``-0``,
numbers padded with spaces, booleans, numeric case IDs, a compressed file, a URL, ...) returns
``None``, and the caller reads the table with pandas as before, with pandas' own one-line
errors. A feature column holding a value that is certainly not a number (``x7``, ``1,5``) is
skipped, as pandas types it as text and the ICC keeps only numeric columns. Numbers are parsed
with Python's correctly rounded ``float``; pandas' default parser agrees on every decimal number
(checked in ``Testing/test_icc_fast_read.py``).
"""
from __future__ import annotations

import csv
import io
import re
from operator import itemgetter

import numpy as np

from ..outputs import spreadsheet_safe

#: numbers pandas types differently from ``float``: an integer minus zero (read as +0 in an
#: integer column) and integers beyond int64 (read as unsigned or text)
#: (searched in NUL-joined values with a NUL in front: a leading NUL, not "^|", keeps the
#: search fast, 0.03 s instead of 0.17 s on 270,000 values)
_AWKWARD = re.compile(r"\x00(?:-0+|[-+]?[0-9]{19,})(?=\x00|$)")
#: the characters of plain decimal numbers (and the NUL joining them): a quick first check
_PLAIN_CHARS = re.compile(r"[0-9eE.+\-\x00]*")
#: characters of a value pandas might still read as a number (padded, signed, exponent)
_NUMBERISH = frozenset("0123456789+-.eE \t\n\r\f\v")
#: pandas' default missing-value markers, booleans and infinities, lower-cased: a value that is
#: one of these (after stripping) is not plain text to us, whatever pandas makes of it
_SPECIAL = frozenset(w.lower() for w in (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null", "True", "False",
    "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "+nan"))
#: what pandas would decompress or fetch instead of reading as a plain file
_NOT_PLAIN = (".gz", ".bz2", ".zip", ".xz", ".zst", ".tar", ".tgz", ".tbz", ".txz", ".tzst")


def _is_text(value: str) -> bool:
    """A value that pandas certainly reads as text (so its column is not numeric)."""
    return (not set(value) <= _NUMBERISH and value.strip().lower() not in _SPECIAL)


def read_long_table(path, case_col: str, reader_col: str):
    """Read a plain numeric long table, or return ``None`` when pandas must read it.

    Parameters
    ----------
    path : str or Path
        CSV file: one row per case and reader.
    case_col, reader_col : str
        The case and reader columns.

    Returns
    -------
    tuple or None
        ``(values, features, case_keys, reader_keys)``: ratings of shape (n_features, n_rows),
        the numeric feature columns in file order, and each row's case and reader; ``None``
        when the table is not one this reader vouches for (see the module docstring).
    """
    p = str(path)
    if "://" in p or p.lower().endswith(_NOT_PLAIN) or case_col == reader_col:
        return None
    try:
        with open(p, encoding="utf-8", newline="") as fh:
            text = fh.read()
        rows = _rows(text)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None          # pandas reads it again and says what is wrong, as before
    if text.startswith("\ufeff") or len(rows) < 2:
        return None
    header, body = rows[0], rows[1:]
    width = len(header)
    if (len(set(header)) != width or "" in header or any('"' in h for h in header)
            or case_col not in header or reader_col not in header
            or any(len(r) != width for r in body)):
        return None
    ids = []
    for name in (case_col, reader_col):
        j = header.index(name)
        col = [r[j] for r in body]
        if (any('"' in v for v in col) or not any(_is_text(v) for v in col)
                or any(v.strip().lower() in _SPECIAL for v in col)):
            return None      # pandas would type it as numbers, or read a marker as missing
        ids.append(col)
    if len(set(zip(*ids))) != len(body):
        return None          # a repeated (case, reader): pandas' path names the first one
    id_cols = {header.index(case_col), header.index(reader_col)}
    values = _all_plain_numbers(body, [j for j in range(width) if j not in id_cols])
    if values is not None:                      # the usual table: done in one pass
        return values, [h for j, h in enumerate(header) if j not in id_cols], ids[0], ids[1]
    features, numeric, joined_all = [], [], [""]
    for j, col in enumerate(zip(*body)):
        if j in id_cols:
            continue
        joined = "\x00".join(col)
        if _PLAIN_CHARS.fullmatch(joined):   # number characters only (the conversion checks
            # the format) or empty cells
            features.append(header[j])
            numeric.append(col if "" not in col else tuple(v or "nan" for v in col))
            joined_all.append(joined)
        elif '"' in joined or not any(_is_text(v) for v in col):
            return None      # a value pandas may read as a number, a marker or a boolean
        # else: a text column, as pandas types it: not a feature
    if not features or _AWKWARD.search("\x00".join(joined_all)):
        return None
    try:
        # numpy parses each str with Python's float, correctly rounded as pandas' reader is; on
        # these characters float's grammar is that of a plain decimal number, so "1-2", "e" or
        # "." raise: neither numbers nor text to pandas, they go to pandas' path
        values = np.array(numeric, dtype=np.float64)
    except ValueError:
        return None
    return values, features, ids[0], ids[1]


def _all_plain_numbers(body, idx):
    """The columns ``idx`` as an array (n_columns, n_rows) when every cell holds a plain
    decimal number, checked and converted row by row (1,500 columns: 15 % less time than
    column by column); None otherwise (empty cells, text, awkward or malformed numbers)."""
    pick = itemgetter(*idx)
    cells = [pick(r) if len(idx) > 1 else (r[idx[0]],) for r in body]
    joined = "\x00" + "\x00".join(map("\x00".join, cells))
    if (not _PLAIN_CHARS.fullmatch(joined) or "\x00\x00" in joined or joined.endswith("\x00")
            or _AWKWARD.search(joined)):
        return None
    try:
        return np.array(cells, dtype=np.float64).T
    except ValueError:
        return None


def _rows(text: str) -> list:
    """The table's rows: split at line ends and commas when nothing is quoted (twice as fast as
    the csv module on 1,500 columns), with the csv module otherwise."""
    if '"' in text or "\r" in text or "\x00" in text:
        return list(csv.reader(io.StringIO(text), strict=True))
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [ln.split(",") for ln in lines]


def icc_csv_text(features, n_cases, n_readers: int, columns: dict, bands, notes) -> str:
    """The ICC table as CSV, byte for byte what :func:`~HER2RadiomicsLib.outputs.write_csv`
    writes for :func:`~.reproducibility.icc_table`'s DataFrame with ``float_format="%.10g"``
    (missing values empty, text cells spreadsheet-safe, ``\\n`` line ends)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = list(columns)
    w.writerow([spreadsheet_safe(c) for c in ["feature", "n_cases", "n_readers", *names,
                                              "band", "note"]])
    cells = [["" if v != v else "%.10g" % v for v in columns[c].tolist()] for c in names]
    for i, f in enumerate(features):
        w.writerow([spreadsheet_safe(f), int(n_cases[i]), n_readers,
                    *(col[i] for col in cells), spreadsheet_safe(bands[i]),
                    spreadsheet_safe(notes[i])])
    return buf.getvalue()


def counts_text(name: str, values) -> str:
    """``pandas.Series(values, name=name).value_counts().to_string()``: the values by count,
    most frequent first (ties in order of first appearance), left-aligned, counts right-aligned
    four spaces after the widest value."""
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    order = sorted(counts.items(), key=lambda kv: -kv[1])      # stable: ties keep first seen
    wv = max(len(v) for v in counts)
    wc = max(len(str(c)) for c in counts.values())
    return "\n".join([name] + [f"{v:<{wv}}    {c:>{wc}}" for v, c in order])
