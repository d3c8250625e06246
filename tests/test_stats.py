"""Differences of means with 95 % intervals and t-tests: against scipy and against the textbook formulas by hand."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pds import stats

A, B = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]


def test_welch_by_hand():
    # means 2.5 and 4; sample variances (ddof 1) 5/3 and 4
    va, vb = (5 / 3) / 4, 4 / 3
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)  # Welch-Satterthwaite
    half = scipy_stats.t.ppf(0.975, df) * se
    p = 2 * scipy_stats.t.sf(1.5 / se, df)
    r = stats.mean_difference(A, B)
    assert r["diff"] == pytest.approx(-1.5) and r["df"] == pytest.approx(df)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((-1.5 - half, -1.5 + half))
    assert r["p"] == pytest.approx(p) and (r["test"], r["n_a"], r["n_b"]) == ("welch", 4, 3)


def test_paired_by_hand():
    a, b = [3.0, 5.0, 4.0], [1.0, 4.0, 1.0]  # differences 2, 1, 3: mean 2, sd 1, 2 degrees of freedom
    half = scipy_stats.t.ppf(0.975, 2) * 1 / math.sqrt(3)
    r = stats.mean_difference(a, b, paired=True)
    assert (r["diff"], r["df"], r["test"]) == (2.0, 2.0, "paired")
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((2 - half, 2 + half))
    assert r["p"] == pytest.approx(2 * scipy_stats.t.sf(2 / (1 / math.sqrt(3)), 2))


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_scipy(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(20, 2, size=3), rng.normal(18, 3, size=5)
    welch = scipy_stats.ttest_ind(a, b, equal_var=False)
    r = stats.mean_difference(a, b, confidence=0.9)
    assert r["p"] == pytest.approx(welch.pvalue) and r["df"] == pytest.approx(welch.df)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(tuple(welch.confidence_interval(0.9)))
    b = b[:3]
    rel = scipy_stats.ttest_rel(a, b)
    r = stats.mean_difference(a, b, paired=True)
    assert r["p"] == pytest.approx(rel.pvalue)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(tuple(rel.confidence_interval(0.95)))


def test_welch_from_summary_by_hand_and_against_the_raw_values():
    r = stats.welch_from_summary(2.5, math.sqrt(5 / 3), 4, 4.0, 2.0, 3)  # A and B's means, sample sds, counts
    assert r == pytest.approx(stats.mean_difference(A, B))
    rng = np.random.default_rng(7)
    a, b = rng.normal(20, 2, size=3), rng.normal(18, 3, size=9)
    got = stats.welch_from_summary(a.mean(), a.std(ddof=1), 3, b.mean(), b.std(ddof=1), 9, confidence=0.9)
    assert got == pytest.approx(stats.mean_difference(a, b, confidence=0.9))
    flat = stats.welch_from_summary(3.0, 0.0, 3, 1.0, 0.0, 3)
    assert (flat["ci_low"], flat["ci_high"]) == (2.0, 2.0) and math.isnan(flat["p"])
    with pytest.raises(ValueError, match="at least 2 values per group, got n = 1"):
        stats.welch_from_summary(1.0, 0.5, 1, 2.0, 0.5, 3)


def test_no_spread_gives_no_test_and_bad_input_is_refused():
    r = stats.mean_difference([1.0, 1.0], [3.0, 3.0])
    assert (r["ci_low"], r["ci_high"]) == (-2.0, -2.0) and math.isnan(r["p"])
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_difference([1.0], [2.0, 3.0])
    with pytest.raises(ValueError, match="same seeds"):
        stats.mean_difference([1.0, 2.0], [2.0, 3.0, 4.0], paired=True)
    with pytest.raises(ValueError, match="NaN"):
        stats.mean_difference([1.0, np.nan], [2.0, 3.0])


def _selected():
    """One val-selected row per student: pds and random under two protocols and two encoders, 3 seeds each, and
    tm on the field protocol's convnet only, with seeds of its own."""
    rows = []
    for k, (protocol, encoder) in enumerate([("field", "convnet"), ("field", "vit"), ("paper", "convnet"),
                                             ("paper", "vit")]):
        for s, seed in enumerate((42, 43, 44)):
            rows.append({"protocol": protocol, "image_encoder": encoder, "method": "pds", "seed": seed,
                         "selected_on": "val", "r_mean": 20.0 + k + [0.5, -0.3, 0.9][s]})
            rows.append({"protocol": protocol, "image_encoder": encoder, "method": "random", "seed": seed,
                         "selected_on": "val", "r_mean": 18.0 + [0.2, 0.4, -0.1][s] * (k + 1)})
    rows += [{"protocol": "field", "image_encoder": "convnet", "method": "tm", "seed": seed, "selected_on": "val",
              "r_mean": v} for seed, v in ((0, 25.0), (1, 24.0))]
    return pd.DataFrame(rows)


def test_compare_methods_per_protocol_and_encoder():
    sel = _selected()
    table = stats.compare_methods(sel, [("pds", "random"), ("tm", "random")], test="auto")
    assert list(zip(table.protocol, table.image_encoder, table.a, table.b, strict=True)) == [
        ("field", "convnet", "pds", "random"), ("field", "vit", "pds", "random"), ("paper", "convnet", "pds", "random"),
        ("paper", "vit", "pds", "random"), ("field", "convnet", "tm", "random")]
    assert table.test.tolist() == ["paired"] * 4 + ["welch"]  # tm's seeds do not pair with random's
    for row in table.itertuples():
        g = sel[(sel.protocol == row.protocol) & (sel.image_encoder == row.image_encoder)]
        a = g[g.method == row.a].sort_values("seed").r_mean.to_numpy()
        b = g[g.method == row.b].sort_values("seed").r_mean.to_numpy()
        ref = stats.mean_difference(a, b, paired=row.test == "paired")
        assert (row.diff, row.ci_low, row.ci_high, row.p, row.n_a, row.n_b) == pytest.approx(
            (ref["diff"], ref["ci_low"], ref["ci_high"], ref["p"], len(a), len(b)))
        assert (row.mean_a, row.mean_b) == pytest.approx((a.mean(), b.mean()))
    welch = stats.compare_methods(sel, [("pds", "random")])
    assert (welch.test == "welch").all()
    assert not np.allclose(welch.p, table.p[:4])  # pairing changes the test


def test_compare_methods_refuses_what_it_cannot_compare():
    sel = _selected()
    with pytest.raises(ValueError, match="do not pair"):
        stats.compare_methods(sel, [("tm", "random")], test="paired")
    with pytest.raises(ValueError, match="no protocol x image encoder"):
        stats.compare_methods(sel, [("pds", "lors")])
    with pytest.raises(ValueError, match="several rows per student"):
        stats.compare_methods(pd.concat([sel, sel]), [("pds", "random")])
    with pytest.raises(ValueError, match="mix selection rules"):
        stats.compare_methods(pd.concat([sel, sel.assign(selected_on="test")]), [("pds", "random")])
    with pytest.raises(ValueError, match="columns"):
        stats.compare_methods(sel.drop(columns="seed"), [("pds", "random")])
    with pytest.raises(ValueError, match="unknown test"):
        stats.compare_methods(sel, [("pds", "random")], test="student")
