"""From students' runs to the figures a reader compares: the epoch chosen on val, metrics.json as a keyed tree that
DVC reads (`dvc metrics show / diff`, `dvc exp show`), and the tables of notebook 05 and the studies.

metrics.json (DESIGN §5): dataset, n_pairs, seeds, then protocol -> method -> image encoder -> the test figures at
the val-selected epoch (mean over seeds of IR@1/5/10, TR@1/5/10, r_mean; `sd` the sample standard deviation of
r_mean over seeds, ddof = 1; `n` the seeds; `epochs`) with the test-selected figures (the papers' optimistic
rule) under `test_selected`. Every evaluation of every run stays in runs.csv.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pds import data
from pds.contrastive import METRICS

RUN_KEYS = ("protocol", "method", "image_encoder", "seed")


def select_epochs(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run (protocol, method, image_encoder, seed), the test metrics at the epoch with the best val
    r_mean (selected_on = val; ties: earliest) and at the epoch with the best test r_mean (selected_on =
    test, the figure published papers report). One row per run and selection rule."""
    keys = list(RUN_KEYS)
    test = runs[runs["split"] == "test"].set_index(keys + ["epoch"])
    val = runs[runs["split"] == "val"].set_index(keys + ["epoch"])
    out = []
    for rule, source in (("val", val), ("test", test)):
        # idxmax keeps the first maximum: the earliest epoch on ties
        best = source["r_mean"].groupby(level=keys, sort=False).idxmax()
        rows = test.loc[best.to_list()].reset_index()
        rows.insert(len(keys), "selected_on", rule)
        out.append(rows)
    return pd.concat(out, ignore_index=True)


def sample_sd(values) -> float:
    """Sample standard deviation (ddof = 1); 0 for a single value (one seed: no spread measured, `n` says so)."""
    values = np.asarray(values, dtype=float)
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _figures(g: pd.DataFrame) -> dict:
    out = {k: round(float(g[k].mean()), 2) for k in METRICS}
    out["sd"] = round(sample_sd(g["r_mean"]), 2)
    out["n"] = int(g["seed"].nunique())
    return out


def summarise(runs: pd.DataFrame, dataset: str, n_pairs: int, methods: Sequence[str] | None = None) -> dict:
    """metrics.json's tree (module docstring) from runs.csv's rows; methods in `methods`' order (default: as
    they appear in `runs`)."""
    sel = select_epochs(runs)
    order = list(methods) if methods else list(dict.fromkeys(runs["method"]))
    tree = {"dataset": dataset, "n_pairs": int(n_pairs), "seeds": int(runs["seed"].nunique())}
    for protocol in dict.fromkeys(runs["protocol"]):
        for method in order:
            for enc in dict.fromkeys(runs["image_encoder"]):
                g = sel[(sel["protocol"] == protocol) & (sel["method"] == method) & (sel["image_encoder"] == enc)]
                if len(g) == 0:
                    continue
                entry = _figures(g[g["selected_on"] == "val"])
                entry["epochs"] = int(g["epochs"].iloc[0])
                entry["test_selected"] = _figures(g[g["selected_on"] == "test"])
                tree.setdefault(protocol, {}).setdefault(method, {})[enc] = entry
    return tree


def rows(metrics: dict, selected_on: str = "val") -> pd.DataFrame:
    """metrics.json's tree as a table, one row per (protocol, method, image_encoder) in the file's order: the
    recalls, r_mean, sd, n and epochs at the epoch selected on `selected_on` (val | test)."""
    if selected_on not in ("val", "test"):
        raise ValueError(f"selected_on must be val or test, not {selected_on!r}.")
    out = []
    for protocol, by_method in metrics.items():
        if not isinstance(by_method, dict):  # dataset, n_pairs, seeds
            continue
        for method, by_encoder in by_method.items():
            for enc, entry in by_encoder.items():
                figures = entry["test_selected"] if selected_on == "test" else entry
                out.append({"protocol": protocol, "method": method, "image_encoder": enc,
                            **{k: figures[k] for k in (*METRICS, "sd", "n")}, "epochs": entry.get("epochs")})
    if not out:
        raise ValueError("metrics.json holds no protocol -> method -> image encoder figures.")
    return pd.DataFrame(out)


def results_table(runs: pd.DataFrame, selected_on: str = "val", methods: Sequence[str] | None = None) -> pd.DataFrame:
    """The papers' table: rows (protocol, image_encoder, method), columns IR@1/5/10, TR@1/5/10, r_mean as
    "mean ± sd" strings over seeds (sample sd), for one selection rule."""
    sel = select_epochs(runs)
    sel = sel[sel["selected_on"] == selected_on]
    g = sel.groupby(["protocol", "image_encoder", "method"], sort=False)[list(METRICS)]
    mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
    table = mean.round(1).astype(str) + " ± " + std.round(1).astype(str)
    if methods:
        index = [(p, e, m) for p in dict.fromkeys(sel["protocol"]) for e in dict.fromkeys(sel["image_encoder"])
                 for m in methods]
        table = table.reindex(pd.MultiIndex.from_tuples(index, names=table.index.names)).dropna()
    return table


def joinable_runs(other: pd.DataFrame, protocols: Sequence[str], encoders: Sequence[str], seeds: Sequence[int],
                  epochs: dict[str, int]) -> pd.DataFrame | None:
    """The rows of another stage's runs (e.g. tm_evaluate's runs.csv) for these protocols and encoders, when its
    students were trained with these seeds and each protocol's epochs (`epochs[protocol]`), so they can join
    this run's tables; None when they were not (a lesson with other settings) or nothing is left."""
    rows_ = other[other["protocol"].isin(protocols) & other["image_encoder"].isin(encoders)]
    same_seeds = sorted(rows_["seed"].unique().tolist()) == sorted(seeds)
    same_epochs = all(set(rows_.loc[rows_["protocol"] == p, "epochs"]) <= {epochs[p]} for p in protocols)
    return rows_ if len(rows_) and same_seeds and same_epochs else None


def gain_grid(metrics: dict, protocol: str, encoders: Sequence[str], methods: Sequence[str],
              reference: str = "random", selected_on: str = "val") -> pd.DataFrame:
    """The papers' cross-architecture table as gains: r_mean of each method minus the reference method's on the
    same student, rows `methods` (those in metrics.json, reference and full left out), columns `encoders`."""
    table = rows(metrics, selected_on)
    grid = table[table["protocol"] == protocol].pivot(index="method", columns="image_encoder", values="r_mean")
    if reference not in grid.index:
        raise ValueError(f"metrics.json has no {reference!r} figures under the {protocol} protocol to compare with.")
    gain = grid - grid.loc[reference]
    return gain.reindex(index=[m for m in methods if m in gain.index and m not in (reference, "full")],
                        columns=list(encoders))


def cells(df: pd.DataFrame, digits: int = 1) -> pd.Series:
    """"r ± sd" per row of `df` (columns r_mean, sd, n), "r (1 seed)" where one student ran."""
    r = df["r_mean"].map(f"{{:.{digits}f}}".format)
    return (r + " ± " + df["sd"].map(f"{{:.{digits}f}}".format)).where(df["n"] != 1, r + " (1 seed)")


def rmean_grid(metrics: dict, selected_on: str = "val") -> pd.DataFrame:
    """The full grid of metrics.json: rows method, columns (protocol, image_encoder), "r_mean ± sd" strings --
    every method under every protocol, so a reader sees which comparisons are like for like."""
    df = rows(metrics, selected_on)
    df["cell"] = cells(df)
    grid = df.pivot(index="method", columns=["protocol", "image_encoder"], values="cell")
    return grid.reindex(index=list(dict.fromkeys(df["method"])), columns=pd.MultiIndex.from_tuples(
        list(dict.fromkeys(zip(df["protocol"], df["image_encoder"], strict=True))), names=["protocol", "image_encoder"]))


def save_outputs(out_dir, runs: pd.DataFrame, metrics: dict | None = None) -> None:
    """results/evaluate/: runs.csv (every evaluation of every run) and metrics.json (unless None)."""
    out = Path(out_dir)
    data.atomic_write(out / "runs.csv", lambda tmp: runs.to_csv(tmp, index=False, float_format="%.4f"))
    if metrics is not None:
        data.save_json(out / "metrics.json", metrics)
