"""Comparisons between methods with their uncertainty (the README's and notebook 05's claims): the difference
of two methods' mean r_mean with a 95 % confidence interval and a t-test -- Welch's (unpaired, unequal
variances) or the paired t-test where the two methods ran with the same seeds.

Inputs are one row per student at its val-selected epoch (`pds.results.select_epochs` with selected_on = val:
protocol, method, image_encoder, seed, r_mean); sample standard deviations (ddof = 1) throughout.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

TESTS = ("welch", "paired", "auto")
KEYS = ["protocol", "image_encoder", "method", "seed"]


def mean_difference(a: Sequence[float], b: Sequence[float], paired: bool = False,
                    confidence: float = 0.95) -> dict:
    """mean(a) - mean(b) with its `confidence` interval and two-sided p-value.

    Unpaired (Welch, `welch_from_summary` on the groups' means, sample sds and counts): standard error
    sqrt(s_a^2 / n_a + s_b^2 / n_b), Welch-Satterthwaite degrees of freedom, p from scipy's Welch test. Paired: a[i] and b[i] share a seed; the differences
    d = a - b give standard error s_d / sqrt(n), n - 1 degrees of freedom, p from `scipy.stats.ttest_rel`.
    Returns {diff, ci_low, ci_high, p, test, n_a, n_b, df}. Without any spread (every value equal within each
    group, or every paired difference equal) no test is possible: the interval is the difference itself and p is
    NaN (scipy's answer there turns on rounding: 0, or NaN).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1), e.g. 0.95.")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a t-test needs at least 2 values per group, got {len(a)} and {len(b)}; run more seeds.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the values to compare contain NaN or inf.")
    if not paired:
        return welch_from_summary(float(a.mean()), float(a.std(ddof=1)), len(a), float(b.mean()),
                                  float(b.std(ddof=1)), len(b), confidence)
    if len(a) != len(b):
        raise ValueError(f"a paired t-test needs one b per a (same seeds), got {len(a)} and {len(b)}.")
    diff = float(a.mean() - b.mean())
    d = a - b
    se = d.std(ddof=1) / np.sqrt(len(d))
    df = float(len(d) - 1)
    p = stats.ttest_rel(a, b).pvalue if se > 0 else np.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, df) * se) if se > 0 else 0.0
    return {"diff": diff, "ci_low": diff - half, "ci_high": diff + half, "p": float(p), "test": "paired",
            "n_a": len(a), "n_b": len(b), "df": df}


def welch_from_summary(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float, n_b: int,
                       confidence: float = 0.95) -> dict:
    """Welch's difference of means (`mean_difference`'s unpaired test) from each group's mean, sample sd (ddof = 1)
    and count alone: what a metrics.json cell holds (r_mean, sd, n), for runs whose per-student rows are not at
    hand."""
    if n_a < 2 or n_b < 2:
        raise ValueError(f"a t-test needs at least 2 values per group, got n = {n_a} and {n_b}; run more seeds.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie in (0, 1), e.g. 0.95.")
    va, vb = sd_a ** 2 / n_a, sd_b ** 2 / n_b
    se = float(np.sqrt(va + vb))
    diff = float(mean_a - mean_b)
    if se == 0:  # Welch-Satterthwaite is undefined without spread, and the interval has no width
        return {"diff": diff, "ci_low": diff, "ci_high": diff, "p": float("nan"), "test": "welch", "n_a": n_a,
                "n_b": n_b, "df": float("nan")}
    df = float((va + vb) ** 2 / (va ** 2 / (n_a - 1) + vb ** 2 / (n_b - 1)))
    p = stats.ttest_ind_from_stats(mean_a, sd_a, n_a, mean_b, sd_b, n_b, equal_var=False).pvalue
    half = float(stats.t.ppf(0.5 + confidence / 2, df) * se)
    return {"diff": diff, "ci_low": diff - half, "ci_high": diff + half, "p": float(p), "test": "welch",
            "n_a": n_a, "n_b": n_b, "df": df}


def compare_methods(selected: pd.DataFrame, pairs: Sequence[tuple[str, str]], test: str = "welch",
                    metric: str = "r_mean", confidence: float = 0.95) -> pd.DataFrame:
    """Method A minus method B on every protocol x image encoder where both ran.

    selected: one row per student (protocol, image_encoder, method, seed, `metric`), e.g.
    `results.select_epochs(runs)` with selected_on == "val". pairs: (A, B) method names. test `welch`
    (unpaired), `paired` (requires both to have run with the same seeds) or `auto` (paired where the seeds
    match, Welch otherwise). Returns one row per pair x protocol x encoder: protocol, image_encoder, a, b, mean_a,
    mean_b, diff, ci_low, ci_high, p, test, n_a, n_b, df.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; use one of {', '.join(TESTS)}.")
    missing = [c for c in [*KEYS, metric] if c not in selected.columns]
    if missing:
        raise ValueError(f"the runs lack the columns {missing}; pass one row per student at its selected epoch "
                         "(results.select_epochs, selected_on == 'val').")
    if "selected_on" in selected.columns and selected["selected_on"].nunique() > 1:
        raise ValueError("the runs mix selection rules; keep one (selected_on == 'val').")
    if selected.duplicated(KEYS).any():
        raise ValueError("the runs hold several rows per student (protocol, image_encoder, method, seed): pass the "
                         "val-selected epoch of each (results.select_epochs), not every evaluation of runs.csv.")
    rows = []
    for a, b in pairs:
        found = False
        for (protocol, encoder), g in selected.groupby(["protocol", "image_encoder"], sort=False):
            ga = g[g["method"] == a].set_index("seed")[metric].sort_index()
            gb = g[g["method"] == b].set_index("seed")[metric].sort_index()
            if len(ga) == 0 or len(gb) == 0:
                continue
            found = True
            same_seeds = ga.index.equals(gb.index)
            if test == "paired" and not same_seeds:
                raise ValueError(f"{a} and {b} ({protocol}, {encoder}) ran with other seeds ({ga.index.tolist()} vs "
                                 f"{gb.index.tolist()}): they do not pair; use test='welch' or 'auto'.")
            paired = test == "paired" or (test == "auto" and same_seeds)
            r = mean_difference(ga.to_numpy(), gb.to_numpy(), paired, confidence)
            rows.append({"protocol": protocol, "image_encoder": encoder, "a": a, "b": b,
                         "mean_a": float(ga.mean()), "mean_b": float(gb.mean()), **r})
        if not found:
            raise ValueError(f"no protocol x image encoder has runs of both {a} and {b}; check the method names.")
    return pd.DataFrame(rows, columns=["protocol", "image_encoder", "a", "b", "mean_a", "mean_b", "diff", "ci_low",
                                       "ci_high", "p", "test", "n_a", "n_b", "df"])
