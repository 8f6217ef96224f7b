"""ICC (all six forms) against independent references; reader-study workflow and CLI."""
import json

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from scipy import stats

from HER2RadiomicsLib.errors import InputError
from HER2RadiomicsLib.readers.reproducibility import (FORMS, band, consensus_masks, icc_arrays,
                                              icc_table, perturb_contour, stable_features)

PG_NAMES = dict(zip(FORMS, ["ICC(1,1)", "ICC(A,1)", "ICC(C,1)", "ICC(1,k)", "ICC(A,k)",
                            "ICC(C,k)"]))

# Shrout & Fleiss (1979), Table 2: 6 targets rated by 4 judges.
SF_TABLE = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9],
                     [6, 2, 4, 7]], float)


def long_table(Y, features=("f",)):
    """(n, k) or (F, n, k) -> long DataFrame with columns case, reader, features."""
    Y = np.asarray(Y, float)
    if Y.ndim == 2:
        Y = Y[None]
    F, n, k = Y.shape
    rows = [{"case": f"c{i}", "reader": f"r{j}", **{features[f]: Y[f, i, j] for f in range(F)}}
            for i in range(n) for j in range(k)]
    return pd.DataFrame(rows)


def test_shrout_fleiss_worked_example():
    """The published values of Shrout & Fleiss (1979) for their Table 2 data."""
    t = icc_table(long_table(SF_TABLE), "case", "reader").iloc[0]
    published = {"ICC1": 0.17, "ICC2": 0.29, "ICC3": 0.71, "ICC1k": 0.44, "ICC2k": 0.62,
                 "ICC3k": 0.91}
    for form, v in published.items():
        assert round(t[form], 2) == v, form


def test_formulas_from_anova_by_hand():
    """Mean squares computed with explicit loops (a second, independent derivation)."""
    Y = SF_TABLE
    n, k = Y.shape
    g = Y.mean()
    msr = sum(k * (Y[i].mean() - g) ** 2 for i in range(n)) / (n - 1)
    msc = sum(n * (Y[:, j].mean() - g) ** 2 for j in range(k)) / (k - 1)
    sse = sum((Y[i, j] - Y[i].mean() - Y[:, j].mean() + g) ** 2
              for i in range(n) for j in range(k))
    mse = sse / ((n - 1) * (k - 1))
    msw = sum((Y[i, j] - Y[i].mean()) ** 2 for i in range(n) for j in range(k)) / (n * (k - 1))
    r = icc_arrays(Y[None])
    assert r["ICC1"][0] == pytest.approx((msr - msw) / (msr + (k - 1) * msw), abs=1e-12)
    assert r["ICC3k"][0] == pytest.approx((msr - mse) / msr, abs=1e-12)
    # ICC(2,1) and ICC(2,k) are the only forms that use the between-reader mean square
    assert r["ICC2"][0] == pytest.approx(
        (msr - mse) / (msr + (k - 1) * mse + k * (msc - mse) / n), abs=1e-12)
    assert r["ICC2k"][0] == pytest.approx((msr - mse) / (msr + (msc - mse) / n), abs=1e-12)
    assert r["ICC2_F"][0] == pytest.approx(msr / mse, abs=1e-12)
    assert r["ICC1_p"][0] == pytest.approx(stats.f.sf(msr / msw, n - 1, n * (k - 1)), abs=1e-12)


@pytest.mark.parametrize("seed,n,k", [(0, 12, 3), (1, 30, 2), (2, 8, 5), (3, 60, 3)])
def test_matches_pingouin_every_form(seed, n, k, monkeypatch):
    monkeypatch.setitem(pg.options, "round.column.CI95", None)    # full precision
    rng = np.random.default_rng(seed)
    F = 4
    truth = rng.normal(0, 1, (F, n, 1))
    Y = truth + rng.normal(0, rng.uniform(0.2, 1.5, (F, 1, 1)), (F, n, k)) \
        + rng.normal(0, 0.4, (F, 1, k))
    feats = [f"f{i}" for i in range(F)]
    ours = icc_table(long_table(Y, feats), "case", "reader").set_index("feature")
    df = long_table(Y, feats)
    for f in feats:
        ref = pg.intraclass_corr(df, "case", "reader", f).set_index("Type")
        for form in FORMS:
            r = ref.loc[PG_NAMES[form]]
            assert ours.loc[f, form] == pytest.approx(r["ICC"], abs=1e-8)
            assert ours.loc[f, f"{form}_ci_low"] == pytest.approx(r["CI95"][0], abs=1e-8)
            assert ours.loc[f, f"{form}_ci_high"] == pytest.approx(r["CI95"][1], abs=1e-8)
            assert ours.loc[f, f"{form}_F"] == pytest.approx(r["F"], rel=1e-10)
            assert ours.loc[f, f"{form}_p"] == pytest.approx(r["pval"], abs=1e-12)


def test_missing_ratings_listwise_per_feature(monkeypatch, caplog):
    monkeypatch.setitem(pg.options, "round.column.CI95", None)
    rng = np.random.default_rng(4)
    Y = rng.normal(size=(2, 10, 3)) + rng.normal(size=(2, 10, 1)) * 2
    df = long_table(Y, ["a", "b"])
    df.loc[(df.case == "c3") & (df.reader == "r1"), "a"] = np.nan
    t = icc_table(df, "case", "reader").set_index("feature")
    assert t.loc["a", "n_cases"] == 9 and t.loc["b", "n_cases"] == 10
    assert "1 case(s) with missing ratings dropped" in t.loc["a", "note"]
    assert "listwise deletion" in caplog.text
    ref = pg.intraclass_corr(df, "case", "reader", "a", nan_policy="omit").set_index("Type")
    assert t.loc["a", "ICC2"] == pytest.approx(ref.loc["ICC(A,1)", "ICC"], abs=1e-10)


def test_constant_and_degenerate_features():
    df = long_table(np.random.default_rng(0).normal(size=(2, 6, 3)), ["ok", "const"])
    df["const"] = 5.0
    t = icc_table(df, "case", "reader").set_index("feature")
    assert np.isnan(t.loc["const", "ICC2"]) and "constant" in t.loc["const", "note"]
    assert np.isfinite(t.loc["ok", "ICC2"])
    with pytest.raises(InputError, match="more than one row"):
        icc_table(pd.concat([df, df.iloc[:1]]), "case", "reader")


def test_vectorised_equals_per_feature():
    rng = np.random.default_rng(9)
    Y = rng.normal(size=(50, 20, 3)) + rng.normal(size=(50, 20, 1))
    all_at_once = icc_arrays(Y)
    for i in (0, 17, 49):
        single = icc_arrays(Y[i:i + 1])
        for form in FORMS:
            assert all_at_once[form][i] == pytest.approx(single[form][0], abs=1e-14)


def test_bands_and_stable_list():
    assert [band(v) for v in (0.3, 0.5, 0.8, 0.95, float("nan"))] == \
        ["poor", "moderate", "good", "excellent", ""]
    t = pd.DataFrame({"feature": ["a", "b", "c"], "ICC2": [0.9, 0.8, 0.5],
                      "ICC2_ci_low": [0.8, 0.6, 0.2]})
    assert stable_features(t) == ["a", "b"]
    assert stable_features(t, use_lower_ci=True) == ["a"]
    with pytest.raises(InputError):
        stable_features(t, form="ICC9")


def test_consensus_with_an_even_number_of_readers_and_anisotropic_perturbation():
    """Four readers: a pixel drawn by exactly two is a tie and stays out of the strict
    majority. Growth by 1 mm on 0.5 x 0.25 mm pixels (x = columns, y = rows) is 2 columns
    and 4 rows on each side of a square: swapped spacing would give 4 and 2."""
    a = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    b = a.copy()
    c = np.zeros_like(a)
    c[10:20, 15:25] = True
    d = c.copy()
    cons = consensus_masks([a, b, c, d])
    votes = a.astype(int) + b + c + d
    assert np.array_equal(cons["majority"], votes >= 3)          # 2 of 4 is a tie: out
    assert cons["majority"][12, 17] and not cons["majority"][12, 12]
    sq = np.zeros((60, 60), bool)
    sq[20:40, 20:40] = True
    p = perturb_contour(sq, (0.5, 0.25), grow_mm=1.0, n_random=0)
    rows, cols = np.nonzero(p["grow_1mm"])
    assert (rows.min(), rows.max()) == (20 - 4, 39 + 4)
    assert (cols.min(), cols.max()) == (20 - 2, 39 + 2)
    rows, cols = np.nonzero(p["shrink_1mm"])
    # pixels exactly 1 mm from the edge stay (4 rows or 2 columns in), as growth takes them
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (23, 36, 21, 38)


def test_consensus_and_perturbation():
    a = np.zeros((30, 30), bool)
    a[5:20, 5:20] = True
    b = np.roll(a, 2, axis=1)
    c = np.roll(a, -2, axis=0)
    cons = consensus_masks([a, b, c])
    votes = a.astype(int) + b + c
    assert np.array_equal(cons["majority"], votes >= 2)
    assert cons["staple"][10, 10] and not cons["staple"][0, 0]
    p = perturb_contour(a, (0.5, 0.5), grow_mm=1.0, n_random=2, seed=1)
    assert p["grow_1mm"].sum() > a.sum() > p["shrink_1mm"].sum()
    assert set(p) == {"original", "grow_1mm", "shrink_1mm", "random_1", "random_2"}
    # growth by 1 mm = 2 px at 0.5 mm: the square gains about a 2-px band
    assert p["grow_1mm"].sum() == pytest.approx((15 + 4) ** 2, rel=0.06)


def test_reader_study_end_to_end(cohort, tmp_path):
    from HER2RadiomicsLib.cli import main
    man = pd.read_csv(cohort / "readers.csv")
    # bad inputs: a case with one reader, an empty mask, a reader mask of the wrong size
    import SimpleITK as sitk
    empty = tmp_path / "empty.png"
    ref = sitk.ReadImage(str(cohort / man["mask"][0]))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros(ref.GetSize()[::-1], np.uint8)), str(empty))
    wrong = tmp_path / "wrong.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((10, 10), np.uint8)), str(wrong))
    man["image"] = [str(cohort / p) for p in man["image"]]
    man["mask"] = [str(cohort / p) for p in man["mask"]]
    c0, c1 = man.case_id.unique()[:2]
    extra = pd.DataFrame([
        {"case_id": "SOLO", "image": man.image[0], "reader": "R1", "mask": man["mask"][0]}])
    man.loc[(man.case_id == c0) & (man.reader == "R3"), "mask"] = str(empty)
    man.loc[(man.case_id == c1) & (man.reader == "R2"), "mask"] = str(wrong)
    mp = tmp_path / "readers.csv"
    pd.concat([man, extra]).to_csv(mp, index=False)
    out = tmp_path / "rs"
    rc = main(["reader-study", "--manifest", str(mp), "--params", "cui2023", "--rings", "3",
               "--robustness", "--out", str(out), "--no-progress"])
    assert rc == 1                                          # problems reported, work done
    doc = json.loads((out / "summary.json").read_text())
    probs = " | ".join(doc["problems"])
    assert "SOLO has a single reader" in probs and "empty" in probs and "wrong.png" in probs
    icc = pd.read_csv(out / "icc.csv")
    assert list(icc.columns[:8]) == ["feature", "n_cases", "n_readers", "ICC1", "ICC1_ci_low",
                                     "ICC1_ci_high", "ICC1_F", "ICC1_p"]
    assert len(icc) == 2 * 86 and icc.n_readers.max() == 3
    assert icc.n_cases.max() == 2          # 4 cases, 2 lost a reader: listwise deletion
    stable = (out / "stable_features.txt").read_text().split()
    assert set(stable) == set(icc.loc[icc.ICC2 > 0.75, "feature"])
    agree = pd.read_csv(out / "agreement.csv")
    assert set(agree.distance_unit) == {"mm"} and agree.dice.between(0.6, 1).all()
    assert (out / "consensus" / f"{c0}_staple.nrrd").exists()
    rob = pd.read_csv(out / "icc_robustness.csv")
    assert rob.n_readers.max() == 7 and "proxy" in rob.columns
    html = (out / "summary.html").read_text()
    assert "Research use only" in html and "data:image/png;base64" in html


def test_icc_cli_on_long_table(tmp_path, capsys):
    from HER2RadiomicsLib.cli import main
    df = long_table(np.random.default_rng(2).normal(size=(3, 8, 3))
                    + np.random.default_rng(3).normal(size=(3, 8, 1)) * 3, ["a", "b", "c"])
    df["site"] = "X"                                         # non-numeric: ignored
    p = tmp_path / "long.csv"
    df.to_csv(p, index=False)
    assert main(["icc", "--table", str(p), "--case-col", "case", "--reader-col", "reader",
                 "--out", str(tmp_path / "icc.csv")]) == 0
    t = pd.read_csv(tmp_path / "icc.csv").set_index("feature")
    assert t.index.tolist() == ["a", "b", "c"]
    for f in "abc":                                  # the values, against pingouin
        ref = pg.intraclass_corr(df, targets="case", raters="reader", ratings=f) \
            .set_index("Type")
        for form in FORMS:
            assert t.loc[f, form] == pytest.approx(ref.loc[PG_NAMES[form], "ICC"], abs=1e-9), \
                (f, form)
    assert main(["icc", "--table", str(p), "--case-col", "nope", "--out",
                 str(tmp_path / "x.csv")]) == 2
    assert "column 'nope'" in capsys.readouterr().err


def test_reader_study_computes_without_drawing_and_the_report_layer_draws(cohort, tmp_path):
    """The readers layer computes and writes the tables; without a ``render`` it draws no plot
    or page; the report layer's renderer, passed in, draws them before the swap."""
    from HER2RadiomicsLib.readers.study import ReaderStudyConfig, run_reader_study
    from HER2RadiomicsLib.reports.reader_study import render_reader_study
    cfg = ReaderStudyConfig(params="cui2023", bland_altman="tumor__original_firstorder_Entropy")
    bare = run_reader_study(cohort / "readers.csv", tmp_path / "bare", cfg, progress=False)
    assert (tmp_path / "bare" / "icc.csv").exists() and "html" not in bare
    assert not (tmp_path / "bare" / "summary.html").exists()
    assert not (tmp_path / "bare" / "plots").exists()
    drawn = run_reader_study(cohort / "readers.csv", tmp_path / "drawn", cfg, progress=False,
                             render=render_reader_study)
    assert drawn["html"] == str(tmp_path / "drawn" / "summary.html")
    assert {p.name for p in (tmp_path / "drawn" / "plots").iterdir()} == {
        "icc_by_class.png", "dice_per_pair.png", "bland_altman.png"}
    assert "data:image/png;base64" in (tmp_path / "drawn" / "summary.html").read_text()
    assert {k: v for k, v in drawn.items() if k != "html"} == bare
    with pytest.raises(InputError, match="--bland-altman nothere: no such feature column"):
        run_reader_study(cohort / "readers.csv", tmp_path / "bad",
                         ReaderStudyConfig(params="cui2023", bland_altman="nothere"),
                         progress=False)
