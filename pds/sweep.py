"""Budget sweep: collect `metrics.json` of runs at several budgets M and plot r_mean against M.

    make sweep    # dvc exp run -S base.n_pairs=M for M in 200, 500, 100, then: python -m pds.sweep results/sweep
"""

import argparse
from pathlib import Path

import matplotlib
import pandas as pd

from pds import data, paths


def collect(folder) -> pd.DataFrame:
    """One row per (n_pairs, method, image_encoder) from every `metrics_*.json` in `folder` (val-selected)."""
    rows = []
    files = sorted(Path(folder).glob("metrics_*.json"))
    if not files:
        raise FileNotFoundError(f"no metrics_*.json in {folder}: run `make sweep` first.")
    for f in files:
        m = data.load_json(f)
        for r in m["results"]:
            if r.get("selected_on", "val") == "val":
                rows.append({"n_pairs": m["n_pairs"], "method": r["method"], "image_encoder": r["image_encoder"],
                             "r_mean": r["r_mean"], "r_mean_std": r["r_mean_std"]})
    return pd.DataFrame(rows).sort_values(["method", "image_encoder", "n_pairs"], ignore_index=True)


def plot_budget(df: pd.DataFrame):
    """r_mean against the budget M, one panel per image encoder, one line per method (± std)."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    encoders = sorted(df.image_encoder.unique())
    fig, axes = plt.subplots(1, len(encoders), figsize=(4.2 * len(encoders), 3.6), squeeze=False, sharey=True)
    for ax, enc in zip(axes[0], encoders, strict=True):
        for method, g in df[df.image_encoder == enc].groupby("method"):
            if method == "full":  # not a budget: a horizontal upper bound
                ax.axhline(g.r_mean.mean(), color="k", ls="--", lw=1, label="full data")
                continue
            ax.errorbar(g.n_pairs, g.r_mean, yerr=g.r_mean_std, marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_xticks(sorted(df.n_pairs.unique()), labels=[str(m) for m in sorted(df.n_pairs.unique())])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the budgets run are labelled
        ax.set_title(enc)
        ax.set_xlabel("budget M (pairs)")
    axes[0][0].set_ylabel("r_mean (%), test, val-selected")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", default="results/sweep")
    args = p.parse_args(argv)
    matplotlib.use("Agg")
    folder = paths.resolve(args.folder)
    df = collect(folder)
    data.save_table(folder / "sweep.parquet", df)
    plot_budget(df).savefig(folder / "r_mean_vs_budget.png", dpi=120)
    print(df.pivot_table(index=["image_encoder", "method"], columns="n_pairs", values="r_mean").round(2))


if __name__ == "__main__":
    main()
