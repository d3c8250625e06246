"""Budget sweep: collect `metrics.json` of runs at several budgets M and plot r_mean against M.

    dvc repro studies/dvc.yaml:sweep_summary   # every budget (sweep@<M>), then the summary and the plot
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import matplotlib
import pandas as pd

from pds import data, paths, results
from studies import chain


def collect(folder) -> pd.DataFrame:
    """One row per (protocol, n_pairs, method, image_encoder) from every `metrics_*.json` in `folder`
    (val-selected)."""
    files = sorted(Path(folder).glob("metrics_*.json"))
    if not files:
        raise FileNotFoundError(f"no metrics_*.json in {folder}: run `make sweep` first.")
    rows = [results.rows(m, "val").assign(n_pairs=m["n_pairs"]) for m in map(data.load_json, files)]
    return pd.concat(rows, ignore_index=True).sort_values(["protocol", "method", "image_encoder", "n_pairs"], ignore_index=True)


def plot_budget(df: pd.DataFrame):
    """r_mean against the budget M, one panel per protocol x image encoder (rows: protocols), one line per
    method (± std) in its fixed colour (`pds.plots.METHOD_COLOURS`); the legend sits right of the first row's
    last panel, outside the data."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from pds import plots

    encoders = sorted(df.image_encoder.unique())
    methods = plots.method_order(df.method.unique())  # fails on a method without a colour
    width = min(plots.MAX_WIDTH_INCHES, 3.1 * len(encoders) + 1.2)  # + the legend, right of the panels
    protocols = list(dict.fromkeys(df.protocol))
    fig, axes = plt.subplots(len(protocols), len(encoders), figsize=(width, 3.3 * len(protocols)), squeeze=False,
                             sharey=True)
    for ax, (protocol, enc) in zip(axes.flat, [(p, e) for p in protocols for e in encoders], strict=True):
        for method in methods:
            g = df[(df.protocol == protocol) & (df.image_encoder == enc) & (df.method == method)]
            if g.empty:
                continue
            if method == "full":  # not a budget: a horizontal upper bound
                ax.axhline(g.r_mean.mean(), color=plots.method_colour("full"), ls="--", lw=1, label="full data")
                continue
            ax.errorbar(g.n_pairs, g.r_mean, yerr=g["sd"], marker="o", capsize=3, label=method,
                        color=plots.method_colour(method))
        ax.set_xscale("log")
        ax.set_xticks(sorted(df.n_pairs.unique()), labels=[str(m) for m in sorted(df.n_pairs.unique())])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the budgets run are labelled
        ax.set_title(f"{enc}, {protocol} protocol")
        ax.set_xlabel("budget M (pairs)")
    for row in axes:
        row[0].set_ylabel("r_mean (%), test, val-selected")
    handles, labels = axes[0][-1].get_legend_handles_labels()  # lines first, then error bars: palette order
    order = sorted(range(len(labels)), key=lambda i: methods.index("full" if labels[i] == "full data" else labels[i]))
    plots.legend_outside(axes[0][-1], handles=[handles[i] for i in order], labels=[labels[i] for i in order],
                         title="method", title_fontsize=plots.FONTSIZE)
    fig.tight_layout()
    return fig


def markdown(df: pd.DataFrame) -> str:
    """summary.md: one table per protocol, a row per method, a column per image encoder x budget, "r ± std"
    (test, val-selected; "r (1 seed)" for a single student); the full-data bound under the budgets whose runs
    trained it."""
    from pds import plots

    out = []
    for protocol, g in df.groupby("protocol", sort=False):
        t = g.assign(cell=results.cells(g), column=g.image_encoder + " M=" + g.n_pairs.astype(str)).pivot_table(
            index="method", columns="column", values="cell", aggfunc="first")
        t = t.reindex(index=plots.method_order(g.method),
                      columns=[f"{e} M={m}" for e in sorted(g.image_encoder.unique()) for m in sorted(g.n_pairs.unique())
                               if f"{e} M={m}" in t.columns])
        out += [f"**{protocol} protocol** (r_mean, test, val-selected, mean ± std over seeds)", "",
                t.fillna("—").to_markdown(), ""]
    return "\n".join(out)


ABLATIONS = {"pds_real__text_prototype": ("pds_real", "prototype"), "pds_and_pds_real__text_caption": ("pds,pds_real",
                                                                                                    "caption")}


def run_budget(world: str, n_pairs: int, work, out, methods: str | None = None, full_epochs: int | None = None,
               full_seeds: int | None = None, keep=None) -> None:
    """Notebooks 01-05 on data/raw/<world> at budget `n_pairs` in `work` (studies.chain); `out` (a
    metrics_<M>.json) is written last. `keep`: a folder that also gets the run's evaluate/ files and notebooks."""
    evaluate = {k: v for k, v in (("methods", methods), ("full_epochs", full_epochs), ("full_seeds", full_seeds))
                if v is not None}
    # paths relative to the repository root (where the chain runs): the executed notebooks show no machine's folders
    work = Path(work)
    chain.run(chain.commands(work, world, n_pairs, evaluate=evaluate, raw=f"data/raw/{world}"))
    if keep:
        keep = paths.resolve(keep)
        work = paths.resolve(work)
        kept = [work / "evaluate" / n for n in ("metrics.json", "runs.csv", "r_mean.png", "retrieval_examples.png")]
        for f in [*kept, *(work / "notebooks").glob("0*.ipynb")]:
            dest = keep / ("notebooks" if f.suffix == ".ipynb" else "") / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
    out = paths.resolve(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(paths.resolve(work) / "evaluate" / "metrics.json", out.with_suffix(".tmp"))
    out.with_suffix(".tmp").replace(out)


def run_ablations(world: str, n_pairs: int, run, out) -> None:
    """Notebook 05 on a finished run's folders (embeddings/, text_features/, prototypes/, synthetic/ under `run`)
    with real images at the prototypes (pds_real) and with the retrieved caption as PDS's text target; each
    variant's metrics.json lands in out/<variant>.json (the executed notebooks stay in a temporary folder)."""
    run, out = Path(run), paths.resolve(out)  # `run` relative to the repository root, as the notebook sees it
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (methods, target) in ABLATIONS.items():
            params = {"embeddings_dir": run / "embeddings", "text_features_dir": run / "text_features",
                      "clusters_dir": run / "clusters",
                      "prototypes_dir": run / "prototypes", "synthetic_dir": run / "synthetic",
                      "dataset_root": f"data/raw/{world}", "encoders_dir": f"models/{world}/toy-encoders",
                      "out_dir": f"{tmp}/{name}", "dataset": world, "n_pairs": n_pairs, "methods": methods,
                      "text_target": target, "tm_runs": "", "tm_dir": ""}
            chain.run([[*chain.PAPERMILL, "notebooks/05_evaluate.ipynb", f"{tmp}/{name}.ipynb",
                        *chain.notebook_params(params)]])
            shutil.copyfile(f"{tmp}/{name}/metrics.json", out / f"{name}.json")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="notebooks 01-05 at one budget -> a metrics_<M>.json")
    r.add_argument("--world", default="toyworld")
    r.add_argument("--n-pairs", type=int, required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--methods")
    r.add_argument("--full-epochs", type=int)
    r.add_argument("--full-seeds", type=int)
    r.add_argument("--keep", help="also copy the run's evaluate/ files and notebooks here")
    a = sub.add_parser("ablations", help="notebook 05's ablations of PDS on a finished run")
    a.add_argument("--world", default="toyworld")
    a.add_argument("--n-pairs", type=int, required=True)
    a.add_argument("--run", required=True)
    a.add_argument("--out", required=True)
    s = sub.add_parser("summary", help="summary.md, sweep.parquet and the plot from metrics_<M>.json files")
    s.add_argument("folder", nargs="?", default="results/sweep")
    args = p.parse_args(argv)
    if args.cmd == "run":
        return run_budget(args.world, args.n_pairs, args.work, args.out, args.methods, args.full_epochs,
                          args.full_seeds, args.keep)
    if args.cmd == "ablations":
        return run_ablations(args.world, args.n_pairs, args.run, args.out)
    matplotlib.use("Agg")
    folder = paths.resolve(args.folder)
    df = collect(folder)
    data.save_table(folder / "sweep.parquet", df)
    plot_budget(df).savefig(folder / "r_mean_vs_budget.png", dpi=120)
    text = markdown(df)
    data.atomic_write(folder / "summary.md", lambda path: path.write_text(text))
    print(df.pivot_table(index=["protocol", "image_encoder", "method"], columns="n_pairs", values="r_mean").round(2))


if __name__ == "__main__":
    main()
