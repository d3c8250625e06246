"""PDS's own variance: the distillation repeated with other seeds, so that PDS's spread covers its synthetic
set as random's covers its subsets.

A random baseline draws a new subset for every student seed, so its standard deviation includes the choice of
the set. PDS is one deterministic set per seed of k-means and of the decoder; its students' spread alone says
nothing about how much another set would differ. This study reruns notebooks 02-05 on a finished run's
embeddings and caption features, at that run's budget, with the k-means seed and the decoder seed both set to the
seed of each entry of `studies/params.yaml`'s `seeds.sets` (students keep notebook 05's seeds), evaluates `pds`
and `pds_real` on each set, and adds the finished run itself (`seeds.reports`) as the set of params.yaml's own
seed.

    dvc repro studies/dvc.yaml:seeds_report   # every report's sets (seeds@<report>-<s>), then the report

`report` compares PDS with every baseline of the finished run by Welch's test on set means: the unit is the
set (one value per set: the mean of its students), against one value per student for the baselines (each on a
subset of its own). With a balanced design the mean of the set means is the mean of every PDS student, and their
spread is the right standard error for it. Writes, under `out`: runs.csv (the new sets' evaluations),
comparisons.csv, metrics.json (set means; a tree DVC reads), summary.md and sets.png.
"""

import argparse
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from pds import config, data, paths, results, stats
from studies import chain

METHODS = ("pds", "pds_real")  # what depends on the set's seed; the baselines draw their subsets from student seeds


def commands(base, work, world: str, n_pairs: int, seed: int) -> list[list[str]]:
    """Notebooks 02-05 in `work` with k-means and decoder seed `seed`, reading `base`'s embeddings/ and
    text_features/ (neither depends on a seed) and evaluating METHODS only."""
    base, w = Path(base), Path(work)
    raw = f"data/raw/{world}"

    def notebook(name, params):
        return [*chain.PAPERMILL, f"notebooks/{name}.ipynb", str(w / "notebooks" / f"{name}.ipynb"),
                *chain.notebook_params(params)]

    emb, feats = base / "embeddings", base / "text_features"
    return [
        notebook("02_cluster", {"embeddings_dir": emb, "dataset_root": raw, "out_dir": w / "clusters",
                                "n_clusters": n_pairs, "seed": seed}),
        notebook("03_match", {"embeddings_dir": emb, "clusters_dir": w / "clusters", "dataset_root": raw,
                              "out_dir": w / "prototypes"}),
        notebook("04_synthesize", {"prototypes_dir": w / "prototypes", "embeddings_dir": emb, "dataset_root": raw,
                                   "dataset": world, "out_dir": w / "synthetic", "seed": seed}),
        notebook("05_evaluate", {"embeddings_dir": emb, "text_features_dir": feats, "clusters_dir": w / "clusters",
                                 "prototypes_dir": w / "prototypes", "synthetic_dir": w / "synthetic",
                                 "dataset_root": raw, "encoders_dir": f"models/{world}/toy-encoders",
                                 "out_dir": w / "evaluate", "dataset": world, "n_pairs": n_pairs,
                                 "methods": ",".join(METHODS), "tm_runs": "", "tm_dir": ""}),
    ]


def set_runs(folder) -> dict[int, Path]:
    """{seed: runs.csv} of every finished set under `folder` (s<seed>/evaluate/runs.csv)."""
    folder = paths.resolve(folder)
    found = {int(d.name[1:]): d / "evaluate" / "runs.csv" for d in sorted(folder.glob("s*"))
             if d.name[1:].lstrip("-").isdigit() and (d / "evaluate" / "runs.csv").is_file()}
    if not found:
        raise FileNotFoundError(f"{folder} holds no s<seed>/evaluate/runs.csv; run "
                                "`dvc repro studies/dvc.yaml:seeds_report` (it runs every seed first).")
    return found


def read_runs(path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `dvc repro studies/dvc.yaml:seeds_report` first.")
    return pd.read_csv(path)


def load_sets(base_runs, seed_runs: dict[int, str | Path], base_seed: int) -> pd.DataFrame:
    """Every evaluation row of the finished run (column set_seed = `base_seed` for METHODS, NaN for the
    baselines) and of each seed's runs.csv (`seed_runs`: set seed -> file; METHODS only)."""
    base = read_runs(base_runs) if not isinstance(base_runs, pd.DataFrame) else base_runs.copy()
    base["set_seed"] = np.where(base["method"].isin(METHODS), base_seed, np.nan)
    frames = [base]
    for s, f in seed_runs.items():
        if int(s) == int(base_seed):
            raise ValueError(f"seed {s} is the finished run's own (base.seed); choose other seeds in "
                             "studies/params.yaml seeds.sets.")
        runs = read_runs(f)
        runs = runs[runs["method"].isin(METHODS)].copy()
        if runs.empty:
            raise ValueError(f"{f} has no rows of {', '.join(METHODS)}; rerun `studies.seeds run --seed {s}`.")
        runs["set_seed"] = int(s)
        frames.append(runs)
    return pd.concat(frames, ignore_index=True)


def selected(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per student at its val-selected epoch (results.select_epochs), set_seed kept."""
    keys = ["protocol", "method", "image_encoder", "seed", "set_seed"]
    out = []
    for set_seed, g in runs.groupby(runs["set_seed"].fillna(-1), sort=True):
        sel = results.select_epochs(g.drop(columns="set_seed"))
        sel = sel[sel["selected_on"] == "val"].copy()
        sel["set_seed"] = np.nan if set_seed == -1 else set_seed
        out.append(sel)
    sel = pd.concat(out, ignore_index=True)
    if sel.duplicated(keys).any():
        raise ValueError("several rows per student and set; give each set's runs once.")
    return sel


def set_means(sel: pd.DataFrame, methods=METHODS) -> pd.DataFrame:
    """Per protocol x method x encoder x set: the mean r_mean of its students (`methods` only: those whose set
    depends on a distillation seed)."""
    s = sel[sel["method"].isin(methods)]
    return (s.groupby(["protocol", "method", "image_encoder", "set_seed"], sort=False)["r_mean"]
            .agg(["mean", "std", "count"]).reset_index()
            .rename(columns={"mean": "r_mean", "std": "sd_students", "count": "students"}))


def compare(sel: pd.DataFrame, means: pd.DataFrame, baselines: list[str], first_set: int) -> pd.DataFrame:
    """Each method of `means` (one value per set: `set_means(sel)`) minus each baseline (one value per student),
    Welch's test, and the same difference with the students of set `first_set` alone (what a one-set comparison
    says)."""
    rows = []
    for (protocol, method, enc), g in means.groupby(["protocol", "method", "image_encoder"], sort=False):
        if len(g) < 2:  # one set: no spread across sets to test with
            continue
        cell = sel[(sel["protocol"] == protocol) & (sel["image_encoder"] == enc)]
        for b in baselines:
            vb = cell.loc[cell["method"] == b, "r_mean"].to_numpy()
            if len(vb) < 2:
                continue
            sets = stats.mean_difference(g["r_mean"].to_numpy(), vb)
            one = cell[(cell["method"] == method) & (cell["set_seed"] == first_set)]
            first = stats.mean_difference(one["r_mean"].to_numpy(), vb)
            rows.append({"protocol": protocol, "image_encoder": enc, "a": method, "b": b,
                         "mean_a": float(g["r_mean"].mean()), "mean_b": float(vb.mean()),
                         "sd_sets": float(g["r_mean"].std(ddof=1)), "n_sets": len(g),
                         "diff": sets["diff"], "ci_low": sets["ci_low"], "ci_high": sets["ci_high"], "p": sets["p"],
                         "one_set_ci_low": first["ci_low"], "one_set_ci_high": first["ci_high"],
                         "one_set_p": first["p"]})
    return pd.DataFrame(rows)


def metrics_tree(means: pd.DataFrame, dataset: str, n_pairs: int) -> dict:
    """{dataset, n_pairs, sets, protocol: {method: {encoder: {r_mean, sd (between sets), sd_students, n}}}} from
    `set_means`' table."""
    tree = {"dataset": dataset, "n_pairs": int(n_pairs), "sets": int(means["set_seed"].nunique())}
    for (protocol, method, enc), g in means.groupby(["protocol", "method", "image_encoder"], sort=False):
        tree.setdefault(protocol, {}).setdefault(method, {})[enc] = {
            "r_mean": round(float(g["r_mean"].mean()), 2), "sd": round(results.sample_sd(g["r_mean"]), 2),
            "sd_students": round(float(np.sqrt((g["sd_students"] ** 2).mean())), 2), "n": int(len(g))}
    return tree


def markdown(comparisons: pd.DataFrame, tree: dict) -> str:
    lines = [f"# PDS over {tree['sets']} distillation seeds ({tree['dataset']}, M = {tree['n_pairs']})", "",
             "Set means: each set's students averaged (notebook 05's seeds), then the spread across sets (sd, "
             "ddof = 1). Differences: PDS's set means against the baseline's students, Welch's test, 95 % "
             "interval; `one set` is the same comparison with the finished run's set alone (its students).", "",
             "| protocol | student | method | r_mean | sd (sets) | sd (students) |", "|---|---|---|---|---|---|"]
    for protocol, methods in tree.items():
        if not isinstance(methods, dict):
            continue
        for method, encs in methods.items():
            for enc, e in encs.items():
                lines.append(f"| {protocol} | {enc} | {method} | {e['r_mean']:.2f} | {e['sd']:.2f} | "
                             f"{e['sd_students']:.2f} |")
    lines += ["", "| protocol | student | A − B | diff | 95 % interval | p | one set: interval | one set: p |",
              "|---|---|---|---|---|---|---|---|"]
    for r in comparisons.itertuples():
        lines.append(f"| {r.protocol} | {r.image_encoder} | {r.a} − {r.b} | {r.diff:+.2f} | "
                     f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}] | {r.p:.3f} | "
                     f"[{r.one_set_ci_low:+.2f}, {r.one_set_ci_high:+.2f}] | {r.one_set_p:.3f} |")
    return "\n".join(lines) + "\n"


def plot_sets(sel: pd.DataFrame, means: pd.DataFrame, methods: list[str]):
    """Per protocol x student: every PDS set mean (`means`) and every baseline student (dots), their means
    (bars)."""
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pds import plots

    protocols = list(dict.fromkeys(sel["protocol"]))
    encoders = list(dict.fromkeys(sel["image_encoder"]))
    fig, axes = plt.subplots(len(protocols), len(encoders), figsize=(10.5, 3.2 * len(protocols)), squeeze=False,
                             sharey="row")
    for i, protocol in enumerate(protocols):
        for j, enc in enumerate(encoders):
            ax = axes[i, j]
            for x, m in enumerate(methods):
                if m in METHODS:
                    v = means[(means["protocol"] == protocol) & (means["image_encoder"] == enc)
                              & (means["method"] == m)]["r_mean"].to_numpy()
                else:
                    v = sel[(sel["protocol"] == protocol) & (sel["image_encoder"] == enc)
                            & (sel["method"] == m)]["r_mean"].to_numpy()
                if len(v) == 0:
                    continue
                c = plots.method_colour(m)
                ax.bar(x, v.mean(), color=c, alpha=0.35, width=0.7)
                ax.scatter(np.full(len(v), x), v, color=c, s=18, zorder=3)
            ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=plots.FONTSIZE)
            ax.set_title(f"{protocol} protocol, {enc}", fontsize=plots.FONTSIZE + 1)
            if j == 0:
                ax.set_ylabel("r_mean (val-selected)")
    fig.suptitle("PDS: one dot per distilled set (its students' mean); baselines: one dot per student",
                 fontsize=plots.FONTSIZE + 1)
    fig.tight_layout()
    return fig


def report(base_runs, seed_runs: dict[int, str], base_seed: int, out, dataset: str, n_pairs: int) -> None:
    out = paths.resolve(out)
    runs = load_sets(base_runs, seed_runs, base_seed)
    sel = selected(runs)
    baselines = [m for m in dict.fromkeys(sel["method"]) if m not in METHODS and m != "full"]
    means = set_means(sel)
    comparisons = compare(sel, means, baselines, base_seed)
    tree = metrics_tree(means, dataset, n_pairs)
    new = runs[runs["set_seed"].notna() & (runs["set_seed"] != base_seed)]
    results.save_outputs(out, new.assign(set_seed=new["set_seed"].astype(int)))
    data.atomic_write(out / "comparisons.csv",
                      lambda tmp: comparisons.to_csv(tmp, index=False, float_format="%.4f"))
    data.atomic_write(out / "summary.md", lambda tmp: tmp.write_text(markdown(comparisons, tree)))
    fig = plot_sets(sel, means, [*METHODS, *baselines])
    data.atomic_write(out / "sets.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    data.save_json(out / "metrics.json", tree)  # last: its presence says the report is whole
    print(markdown(comparisons, tree))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="notebooks 02-05 with one distillation seed on a finished run's embeddings")
    r.add_argument("--world", required=True)
    r.add_argument("--n-pairs", type=int, required=True)
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("--base", required=True, help="the finished run (embeddings/, text_features/)")
    r.add_argument("--work", required=True)
    s = sub.add_parser("report", help="PDS's set means against the finished run's baselines")
    s.add_argument("--base-runs", required=True, help="the finished run's runs.csv (its own set and baselines)")
    s.add_argument("--base-seed", type=int, help="the seed the finished run distilled with (default: params.yaml's "
                   "base.seed)")
    s.add_argument("--sets", required=True, help="the other sets' runs: <sets>/s<seed>/evaluate/runs.csv")
    s.add_argument("--world", required=True)
    s.add_argument("--n-pairs", type=int, required=True)
    s.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.cmd == "run":
        chain.run(commands(a.base, a.work, a.world, a.n_pairs, a.seed))
    else:
        base_seed = a.base_seed if a.base_seed is not None else config.load()["base"]["seed"]
        report(a.base_runs, set_runs(a.sets), base_seed, a.out, a.world, a.n_pairs)


if __name__ == "__main__":
    main()
