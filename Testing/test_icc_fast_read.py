"""`her2radiomics icc` reads a plain numeric table without pandas: same ICC table, same stable
list, same printout and the same one-line errors as the pandas path it falls back to.

The reference is the pandas path itself (``pd.read_csv`` + ``icc_table`` + ``write_csv``), which
the other ICC tests check against pingouin and a hand derivation; what is tested here is that
the fast read changes nothing a user can see.
"""
import argparse
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from HER2RadiomicsLib.cli import main
from HER2RadiomicsLib.errors import InputError
from HER2RadiomicsLib.readers.commands import _cmd_icc_pandas
from HER2RadiomicsLib.readers.icc import f_ppf, f_sf
from HER2RadiomicsLib.readers.plaincsv import counts_text, read_long_table


def _table(n_cases=8, readers=("R1", "R2", "R3"), seed=3):
    """A long table as text, with quoted names and IDs, quoted numbers, empty cells, a text
    column, a column of junk among numbers, integers, exponents, a constant feature and a
    column name a spreadsheet would run as a formula."""
    rng = np.random.default_rng(seed)
    lines = ['case_id,reader,"tumor__a, quoted",tumor__b,tumor__int,site,tumor__junk,'
             'tumor__const,=cmd,tumor__few']
    for i in range(n_cases):
        s = rng.normal() * 3
        for j, r in enumerate(readers):
            a = repr(float(s + rng.normal()))            # 17 significant digits
            b = "%.10g" % (s * 1e-5 + rng.normal() * 1e-5)
            b = "" if (i, j) == (2, 1) else b            # a missing rating: listwise deletion
            integer = str(int(rng.integers(-500, 500)))
            junk = '"1,5"' if (i, j) == (4, 0) else "%.3f" % rng.normal()  # text: no feature
            few = "" if i > 1 else f"{rng.normal():.4E}"                 # too few cases
            lines.append(f'"P{i}, left",{r},"{a}",{b},{integer},Site {i % 2},{junk},2.5,'
                         f'{rng.normal() + s:.6e},{few}')
    return "\n".join(lines) + "\n"


def _ns(table, out, **kw):
    d = dict(table=str(table), case_col="case_id", reader_col="reader", icc_form="ICC2",
             threshold=0.75, lower_ci=False, out=str(out))
    d.update(kw)
    return argparse.Namespace(**d)


def _outputs(tmp_path, name, text, capsys, **kw):
    """(fast-path output, pandas-path output): ICC CSV bytes, stable list, stdout."""
    table = tmp_path / f"{name}.csv"
    table.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    res = []
    for how in ("fast", "pandas"):
        out = tmp_path / f"{name}_{how}.csv"
        opts = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}")
                for k, v in kw.items()]
        if how == "fast":
            assert main(["icc", "--table", str(table), "--out", str(out), *opts]) == 0
        else:
            assert _cmd_icc_pandas(_ns(table, out, **kw)) == 0
        stable = out.with_name(out.stem + "_stable_features.txt").read_bytes()
        text_out = capsys.readouterr().out.replace(str(out), "OUT")
        res.append((out.read_bytes(), stable, text_out.replace(
            str(out.with_name(out.stem + "_stable_features.txt")), "STABLE")))
    return res


@pytest.mark.parametrize("kw", [{}, {"icc_form": "ICC3k", "lower_ci": True,
                                      "threshold": 0.5}])
def test_fast_read_gives_the_same_icc_table_as_pandas(tmp_path, capsys, kw):
    text = _table()
    table = tmp_path / "t.csv"
    table.write_text(text)
    got = read_long_table(table, "case_id", "reader")
    assert got is not None, "this table is one the fast path must read"
    values, feats, cases, readers = got
    assert feats == ["tumor__a, quoted", "tumor__b", "tumor__int", "tumor__const", "=cmd",
                     "tumor__few"]                   # site and junk are text, as in pandas
    assert cases[:3] == ["P0, left"] * 3 and readers[:3] == ["R1", "R2", "R3"]
    ref = pd.read_csv(table)
    assert np.array_equal(values, ref[feats].to_numpy(dtype=float).T, equal_nan=True)
    fast, slow = _outputs(tmp_path, "t", text, capsys, **kw)
    assert fast == slow
    icc = pd.read_csv(tmp_path / "t_fast.csv").set_index("feature")
    assert icc.loc["tumor__b", "n_cases"] == 7 and "dropped" in icc.loc["tumor__b", "note"]
    assert "constant" in icc.loc["tumor__const", "note"]
    assert "'=cmd" in icc.index                          # formula cell quoted, as before


def test_crlf_line_ends_and_many_digits_read_alike(tmp_path, capsys):
    rng = np.random.default_rng(9)
    rows = ["case_id,reader,f,g"]
    for i in range(6):
        for r in ("a", "b"):
            long_digits = "".join(map(str, rng.integers(0, 10, 25)))
            rows.append(f"c{i},{r},0.{long_digits}e-{rng.integers(0, 300)},"
                        f"{rng.normal() * 1e-300!r}")
    text = "\r\n".join(rows) + "\r\n"
    table = tmp_path / "t.csv"
    table.write_text(text, newline="")
    assert read_long_table(table, "case_id", "reader") is not None
    fast, slow = _outputs(tmp_path, "t", text, capsys)
    assert fast == slow


def _clean_table(n_cases=10, n_features=40, seed=4):
    """What reader-study writes: IDs, then numbers only (``%.10g``), nothing quoted."""
    rng = np.random.default_rng(seed)
    lines = ["case_id,reader," + ",".join(f"tumor__f{i}" for i in range(n_features))]
    for i in range(n_cases):
        s = rng.normal(size=n_features) * 10.0 ** rng.integers(-6, 6, n_features)
        for r in ("R1", "R2"):
            v = s * (1 + 0.2 * rng.normal(size=n_features))
            lines.append(f"P{i:04d}-1,{r}," + ",".join("%.10g" % x for x in v))
    return "\n".join(lines) + "\n"


def _first_value(text, value):
    return re.sub(r"(?m)^(P0003-1,R2,)[^,]*", lambda m: m.group(1) + value, text)


@pytest.mark.parametrize("edit,fast", [
    (lambda t: t, True),
    (lambda t: t.replace("\n", "\r\n"), True),                   # read by the csv module
    (lambda t: _first_value(t, "-0"), False),                     # pandas: +0 in ints
    (lambda t: _first_value(t, "12345678901234567890"), False),     # beyond int64
    (lambda t: _first_value(t, "1-2"), False),                      # malformed number
    (lambda t: _first_value(t, "1e-400"), True),                    # zero, as in pandas
])
def test_a_clean_table_is_read_in_one_pass(tmp_path, capsys, edit, fast):
    text = edit(_clean_table())
    table = tmp_path / "t.csv"
    table.write_text(text, newline="")
    got = read_long_table(table, "case_id", "reader")
    assert (got is not None) == fast
    if fast:
        ref = pd.read_csv(table)
        assert np.array_equal(got[0], ref[got[1]].to_numpy(dtype=float).T)
    a, b = _outputs(tmp_path, "t", text.encode(), capsys)
    assert a == b


@pytest.mark.parametrize("change", [
    ("NA", lambda t: t.replace(",2.5,", ",NA,", 1)),                # a missing-value marker
    ("inf", lambda t: t.replace(",2.5,", ",inf,", 1)),               # dropped as infinite
    ("padded", lambda t: t.replace(",2.5,", ", 2.5,", 1)),           # pandas reads a number
    ("boolean", lambda t: t.replace("Site 0", "True").replace("Site 1", "False")),
    ("byte-order mark", lambda t: "\ufeff" + t),
    ("minus zero", lambda t: t.replace(",2.5,", ",-0,")),            # pandas: +0 in ints
    ("huge integer", lambda t: t.replace(",2.5,", ",123456789012345678901234,", 1)),
    ("escaped quote", lambda t: t.replace('"P1, left"', '"P1 ""left"""')),
    ("numeric IDs", lambda t: t.replace('"P', '"00').replace(', left"', '"')),
    ("blank line", lambda t: t + "\n"),
    ("repeated name", lambda t: t.replace("tumor__b,", "tumor__int,", 1)),
])
def test_tables_pandas_reads_differently_go_through_pandas(tmp_path, capsys, change):
    text = change[1](_table())
    table = tmp_path / "t.csv"
    table.write_text(text, encoding="utf-8")
    assert read_long_table(table, "case_id", "reader") is None, change[0]
    fast, slow = _outputs(tmp_path, "t", text, capsys)
    assert fast == slow


def _error_line(table, capsys, pandas_ns):
    """The command's stderr (one line expected) and the pandas path's error, as a line."""
    rc = main(["icc", "--table", str(table), "--out", str(table.with_name("o.csv"))])
    err = capsys.readouterr().err
    with pytest.raises(InputError) as exc:
        _cmd_icc_pandas(pandas_ns)
    return rc, [ln for ln in err.splitlines() if ln.strip()], f"error: {exc.value}"


@pytest.mark.parametrize("name,text,must", [
    ("junk", "case_id,reader,f,g\nA,R1,x,y\nA,R2,z,w\nB,R1,q,e\nB,R2,r,t\n",
     "no numeric feature columns found"),
    ("ragged", "case_id,reader,f\nA,R1,1\nA,R2,2,3\nB,R1,3\nB,R2,4\n", "cannot read table"),
    ("one reader", "case_id,reader,f\nA,R1,1\nB,R1,2\nC,R1,4\n", "2 cases and 2 readers"),
    ("twice", "case_id,reader,f\nA,R1,1\nA,R1,2\nB,R1,3\nB,R2,4\n",
     "more than one row for reader"),
    ("no case column", "case,reader,f\nA,R1,1\nA,R2,2\n", "column 'case_id'"),
    ("not UTF-8", b"case_id,reader,f\nA\xff,R1,1\nA,R2,2\n", "cannot read table"),
])
def test_junk_gives_the_same_one_line_error_as_before(tmp_path, capsys, name, text, must):
    table = tmp_path / "t.csv"
    table.write_bytes(text.encode() if isinstance(text, str) else text)
    rc, lines, expected = _error_line(table, capsys, _ns(table, tmp_path / "p.csv"))
    assert rc == 2 and lines == [expected] and must in expected, (lines, expected)
    assert not (tmp_path / "o.csv").exists()


def test_f_distribution_is_scipy_stats_bit_for_bit():
    special = [np.nan, -np.inf, -1.0, 0.0, 1e-300, 0.3, 1.0, 2.5, 77.0, 1e6, 1e300, np.inf]
    x, d1, d2 = np.meshgrid(special, special + [3, 118], special + [59, 120], indexing="ij")
    with np.errstate(all="ignore"):
        assert np.array_equal(f_sf(x, d1, d2), stats.f.sf(x, d1, d2), equal_nan=True)
        for q in (0.025, 0.975, 0.5):
            assert np.array_equal(f_ppf(q, d1, d2), stats.f.ppf(q, d1, d2), equal_nan=True)
        assert np.array_equal(f_ppf(0.975, 59, 118), stats.f.ppf(0.975, 59, 118))


def test_band_counts_print_as_pandas_prints_them():
    rng = np.random.default_rng(0)
    names = ["", "poor", "moderate", "good", "excellent"]
    for _ in range(30):
        vals = list(rng.choice(names, size=int(rng.integers(1, 40))))
        want = pd.Series(vals, name="band").value_counts().to_string()
        assert counts_text("band", vals) == want, vals


def test_icc_command_loads_neither_pandas_nor_scipy_stats(tmp_path):
    """What the command imports is what a user waits for (benchmarks/bench_icc.py)."""
    table = tmp_path / "t.csv"
    table.write_text(_table())
    code = textwrap.dedent(f"""
        import sys
        from HER2RadiomicsLib.cli import main
        rc = main(["icc", "--table", {str(table)!r}, "--out", {str(tmp_path / "o.csv")!r}])
        print(rc, sorted(m for m in ("pandas", "scipy.stats", "SimpleITK", "sklearn",
                                     "matplotlib", "pyarrow") if m in sys.modules))
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr
