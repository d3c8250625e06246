"""The mismatched-pair sweep: PDS against the coresets on copies of a generated world in which a
fraction p of the training images carry another training image's captions (what web-scale data has, and what
PDS's noise filter is for), with that world's own toy models (trained at p = 0) and its val / test splits
untouched. It shows how the PDS - random gap moves with noise that the filter and the averaging should remove,
and how much of that noise the filter actually removes.

    dvc repro studies/dvc.yaml:mismatch_report   # every rate (mismatch@<p>), then the report

Subcommands: `run` is one rate end to end (the world copy, notebooks 01-05 in build/mismatch/p<p>/ through
`studies.chain`, the diagnosis; results/mismatch/p<p>/ gets runs.csv, r_mean.png, filter.json and, last,
metrics.json), `world` writes the copy (params.yaml's entry for the world, its mismatch_rate replaced),
`diagnose` measures the noise filter and the matched intersections against the known mismatched pairs,
`report` collects every `p<rate>/` folder into `summary.md`, `mismatch.parquet` and `mismatch.png`.
"""

import argparse
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from pds import artifacts, config, data, paths, results
from pds.toy import diagnose as diagnose_toy
from pds.toy import world
from studies import chain

CORESETS = ("random", "herding", "kcenter")


def world_entry(params_file, name: str) -> dict:
    """params.yaml's `toyworld.<name>` entry (its size, seed and knobs)."""
    worlds = config.load(params_file)["toyworld"]
    if name not in worlds:
        raise ValueError(f"{params_file} has no toyworld entry {name!r}; use one of {', '.join(worlds) or 'none'}.")
    return dict(worlds[name])


def generate(params_file, name: str, rate: float, out) -> Path:
    """Write world `name` with mismatch_rate `rate` under `out` (every other knob, the size and the seed as
    params.yaml has them: the same images, val and test; only which captions training images carry differs)."""
    entry = world_entry(params_file, name)
    sizes = {k: entry.pop(k) for k in ("n_train", "n_val", "n_test", "image_size", "seed")}
    if entry.get("mismatch_rate", 0):
        raise ValueError(f"{params_file}: toyworld.{name} already has mismatch_rate {entry['mismatch_rate']}; "
                         "sweep a world whose own rate is 0.")
    entry["mismatch_rate"] = float(rate)
    return world.generate_toyworld(out, **sizes, **entry)


def diagnose(root, embeddings_dir, clusters_dir, prototypes_dir) -> dict:
    """How the noise filter and the matched intersections treat the mismatched training pairs:
    `mismatched` their share of all training pairs; `filter_recall` the share of them the filter drops;
    `filter_precision` the share of dropped pairs that are mismatched (the rest are true pairs it loses);
    `mismatched_kept` their share of the pairs k-means sees; `mismatched_members` their share of the pairs in
    the matched intersections (what the prototypes average). The three folders must be one chain of runs."""
    embedded = artifacts.open_artifact(embeddings_dir, "embed", names=["captions.parquet"])
    clustered = artifacts.open_artifact(clusters_dir, "cluster", [embedded], names=["caption_ids.npy", "keep.npy"])
    artifacts.open_artifact(prototypes_dir, "match", [embedded, clustered], names=["members.parquet"])
    captions = data.load_table(Path(embeddings_dir) / "captions.parquet")
    pair_ids = data.load_npy(Path(clusters_dir) / "caption_ids.npy")
    keep = data.load_npy(Path(clusters_dir) / "keep.npy").astype(bool)
    members = data.load_table(Path(prototypes_dir) / "members.parquet")["caption_id"].to_numpy()
    bad_images = diagnose_toy.mismatched_images(root)
    image_of = captions.set_index("caption_id")["image_id"]
    bad = np.isin(image_of.loc[pair_ids].to_numpy(), bad_images)
    bad_members = np.isin(image_of.loc[members].to_numpy(), bad_images)
    dropped = ~keep

    def share(mask):
        return round(float(mask.mean()), 4) if mask.size else None

    return {"pairs": int(bad.size), "mismatched": share(bad), "dropped": share(dropped),
            "filter_recall": share(dropped[bad]), "filter_precision": share(bad[dropped]),
            "mismatched_kept": share(bad[keep]), "mismatched_members": share(bad_members),
            "members": int(members.size)}


def collect(folder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, diagnostics) from every `p<rate>/` folder under `folder`: one row per (rate, protocol, method,
    image_encoder) of its val-selected `metrics.json`, and one row per rate of its `filter.json`."""
    folder = Path(folder)
    runs = sorted(folder.glob("p*/metrics.json"), key=lambda f: float(f.parent.name[1:]))
    if not runs:
        raise FileNotFoundError(f"no p<rate>/metrics.json under {folder}: run `make mismatch` first.")
    rows, diags = [], []
    for f in runs:
        rate = float(f.parent.name[1:])
        m = data.load_json(f)
        rows.append(results.rows(m, "val").assign(mismatch_rate=rate))
        if (f.parent / "filter.json").is_file():
            diags.append({"mismatch_rate": rate, **data.load_json(f.parent / "filter.json")})
    return pd.concat(rows, ignore_index=True), pd.DataFrame(diags)


def gaps(df: pd.DataFrame) -> pd.DataFrame:
    """PDS minus each coreset's r_mean, per (rate, protocol, image_encoder)."""
    wide = df.pivot_table(index=["mismatch_rate", "protocol", "image_encoder"], columns="method", values="r_mean")
    out = pd.DataFrame(index=wide.index)
    for m in CORESETS:
        if "pds" in wide and m in wide:
            out[f"pds - {m}"] = (wide["pds"] - wide[m]).round(2)
    return out.reset_index()


def plot(df: pd.DataFrame, diags: pd.DataFrame):
    """r_mean against the mismatch rate, one panel per protocol x image encoder, one line per method (± std,
    its fixed colour); below, what the noise filter leaves of the mismatched pairs. Legends sit right of their
    row, outside the data."""
    import matplotlib.pyplot as plt

    from pds import plots

    panels = list(dict.fromkeys(zip(df.protocol, df.image_encoder, strict=True)))
    methods = plots.method_order(df.method.unique())
    rates = sorted(df.mismatch_rate.unique())
    rows = 1 + (not diags.empty)
    fig = plt.figure(figsize=(min(plots.MAX_WIDTH_INCHES, 3.4 * len(panels) + 1.6), 3.4 * rows))
    grid = fig.add_gridspec(rows, len(panels))
    axes = [fig.add_subplot(grid[0, k]) for k in range(len(panels))]
    for ax, (protocol, enc) in zip(axes, panels, strict=True):
        for method in methods:
            g = df[(df.protocol == protocol) & (df.image_encoder == enc) & (df.method == method)]
            g = g.sort_values("mismatch_rate")
            ax.errorbar(g.mismatch_rate, g.r_mean, yerr=g["sd"], marker="o", capsize=3, label=method,
                        color=plots.method_colour(method))
        ax.set_xticks(rates)
        ax.set_title(f"{enc}, {protocol} protocol")
        ax.set_xlabel("mismatched training pairs p")
        ax.set_ylabel("r_mean (%), test, val-selected")
    plots.legend_outside(axes[-1], title="method", title_fontsize=plots.FONTSIZE)
    if not diags.empty:
        ax = fig.add_subplot(grid[1, 0])
        d = diags.sort_values("mismatch_rate")
        shown, reference, other = plots.SERIES_COLOURS[:3]
        ax.plot(rates, [100 * r for r in rates], ":", color=reference, label="in the data (p)")
        ax.plot(d.mismatch_rate, 100 * d.mismatched_kept, "o-", color=shown, label="left by the noise filter")
        ax.plot(d.mismatch_rate, 100 * d.mismatched_members, "s--", color=other, label="in the intersections")
        ax.set_xticks(rates)
        ax.set_title("mismatched pairs (%)")
        ax.set_xlabel("mismatched training pairs p")
        plots.legend_outside(ax)
    fig.tight_layout()
    return fig


def summary(df: pd.DataFrame, diags: pd.DataFrame, world_name: str) -> str:
    """summary.md: r_mean per rate and method, the PDS - coreset gaps, and the filter's diagnostics."""
    from pds import plots

    lines = [f"# Mismatched-pair sweep on {world_name} (written by `python -m studies.mismatch report`)", ""]
    table = df.assign(r=results.cells(df, digits=2))
    table = table.pivot_table(index=["protocol", "image_encoder", "method"], columns="mismatch_rate", values="r",
                              aggfunc="first")
    table = table.rename(columns=lambda rate: f"p = {rate:g}").reset_index()
    order = plots.method_order(table.method)
    table = table.sort_values(["protocol", "image_encoder", "method"], key=lambda c: c.map(order.index)
                              if c.name == "method" else c)
    lines += ["r_mean (test, val-selected, mean ± std over seeds) by mismatch rate p:", "",
              table.to_markdown(index=False), "", "PDS minus each coreset:", "", gaps(df).to_markdown(index=False), ""]
    if not diags.empty:
        lines += ["The noise filter (drops the 20 % of pairs with the lowest image-caption cosine) and the matched "
                  "intersections, against the known mismatched pairs:", "",
                  diags.astype(object).where(diags.notna(), "—").to_markdown(index=False), ""]
    return "\n".join(lines)


def rate_commands(work, rate: str, world_name: str = "toyflickr", n_pairs: int = 100, encoders: str = "convnet",
                  methods: str = "pds,pds_real,random,herding,kcenter") -> list[list[str]]:
    """Notebooks 01-05 on the copy of `world_name` at mismatch rate `rate` (written to work/raw/<world_name>),
    with that world's own toy models (trained at p = 0), at budget `n_pairs`, the students `encoders`, both
    protocols; no full-data bound (not a budget, and 24 epochs on toyflickr)."""
    return chain.commands(work, world_name, n_pairs, dataset=f"{world_name}_p{rate}",
                          evaluate={"methods": methods, "image_encoders": encoders})


def run_rate(rate: str, work, out, world_name: str = "toyflickr", **kwargs) -> None:
    """One rate end to end; out/metrics.json is written last, so a rate whose metrics.json exists is complete."""
    generate(paths.resolve("params.yaml"), world_name, float(rate), paths.resolve(work) / "raw" / world_name)
    chain.run(rate_commands(Path(work), rate, world_name, **kwargs))  # relative: no machine's folders in notebooks
    work, out = paths.resolve(work), paths.resolve(out)
    out.mkdir(parents=True, exist_ok=True)
    data.save_json(out / "filter.json", diagnose(work / "raw" / world_name, work / "embeddings", work / "clusters",
                                                 work / "prototypes"))
    for name in ("runs.csv", "r_mean.png", "metrics.json"):
        shutil.copyfile(work / "evaluate" / name, out / f"{name}.tmp")
        (out / f"{name}.tmp").replace(out / name)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r1 = sub.add_parser("run", help="one rate end to end: world copy, notebooks 01-05, diagnosis, results")
    r1.add_argument("--rate", required=True)
    r1.add_argument("--world", default="toyflickr")
    r1.add_argument("--n-pairs", type=int, default=100)
    r1.add_argument("--encoders", default="convnet")
    r1.add_argument("--methods", default="pds,pds_real,random,herding,kcenter")
    r1.add_argument("--work", required=True)
    r1.add_argument("--out", required=True)
    w = sub.add_parser("world", help="write a copy of a world with mismatched training pairs")
    w.add_argument("--params", default="params.yaml")
    w.add_argument("--world", default="toyflickr")
    w.add_argument("--rate", type=float, required=True)
    w.add_argument("--out", required=True)
    d = sub.add_parser("diagnose", help="the noise filter and the intersections against the mismatched pairs")
    d.add_argument("--root", required=True, help="the world copy (its annotation file)")
    d.add_argument("--run", required=True, help="folder holding embeddings/, clusters/ and prototypes/")
    d.add_argument("--out", required=True, help="filter.json to write")
    r = sub.add_parser("report", help="summary.md, mismatch.parquet and mismatch.png from p<rate>/ folders")
    r.add_argument("folder", nargs="?", default="results/mismatch")
    r.add_argument("--world", default="toyflickr")
    args = p.parse_args(argv)
    if args.cmd == "run":
        run_rate(args.rate, args.work, args.out, args.world, n_pairs=args.n_pairs, encoders=args.encoders,
                 methods=args.methods)
    elif args.cmd == "world":
        print(f"wrote {generate(paths.resolve(args.params), args.world, args.rate, paths.resolve(args.out))}")
    elif args.cmd == "diagnose":
        run = paths.resolve(args.run)
        out = diagnose(paths.resolve(args.root), run / "embeddings", run / "clusters", run / "prototypes")
        data.save_json(paths.resolve(args.out), out)
        print(out)
    else:
        matplotlib.use("Agg")
        folder = paths.resolve(args.folder)
        df, diags = collect(folder)
        data.save_table(folder / "mismatch.parquet", df)
        plot(df, diags).savefig(folder / "mismatch.png", dpi=120)
        text = summary(df, diags, args.world)
        data.atomic_write(folder / "summary.md", lambda path: path.write_text(text))
        print(text)


if __name__ == "__main__":
    main()
