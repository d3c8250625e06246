"""The result tables of the docs pages, generated from the committed results files so the text cannot drift
from them. A table sits between two markers naming what makes it:

    <!-- table: rmean results/evaluate -->
    ...generated markdown...
    <!-- /table -->

Kinds: `rmean` (r_mean ± sd, every method, protocol x student), `recall <encoder>` (the papers' layout, field |
paper), `gain` (r_mean minus random's), `versus <method> <other,...>` (method minus each other method: the
difference, its 95 % interval and Welch's p, from the folder's runs.csv). The folder holds metrics.json (and
runs.csv for `versus`). Study folders: `budget <protocol>` (a budget sweep's metrics_<M>.json: r_mean per student
at each M), `mismatch` (the mismatched-pair sweep's p<rate>/metrics.json: r_mean ± sd per protocol and rate),
`filter` (its p<rate>/filter.json: where the mismatched pairs go), `seeds [<method,...>]` (studies.seeds'
comparisons.csv: PDS's set means against each baseline), `ablations <protocol>` (a study folder's ablations_<M>/:
decoded or real images at the prototypes, averaged or retrieved caption as target), `curve` (studies.tm_curve's
curve.csv, the chosen set in bold), `chosen <reference folder or metrics file> <method,...>` (the sets
studies.tm_curve chose against those methods of the same world's run), `sets <set folder,...> <method,...>`
(MTT-VL's and LoRS's chosen sets over several distillation seeds against those methods' students).

    python -m studies.tables docs/results.md        # rewrite every table in place
    python -m studies.tables --check docs/*.md      # exit 1 if a page differs from what its files give (tests)
"""

import argparse
import itertools
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pds import data, paths, plots, results, stats

MARKER = re.compile(r"(<!-- table: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
LABELS = {"pds_real": "pds_real (ablation)", "tm": "tm (MTT-VL)", "lors": "lors (LoRS)",
          "random_kept": "random_kept (control)", "random_avg": "random_avg (control)",
          "random_nbr": "random_nbr (control)"}
RECALLS = ["IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "r_mean"]


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _columns(table: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(table["protocol"], table["image_encoder"], strict=True)))


def _methods(table: pd.DataFrame) -> list[str]:
    return plots.method_order(table["method"].unique())


def rmean(metrics: dict) -> str:
    t = results.rows(metrics, "val")
    t["cell"] = results.cells(t)
    cols = _columns(t)
    cell = t.set_index(["method", "protocol", "image_encoder"])["cell"]
    rows = [[LABELS.get(m, m)] + [cell.get((m, p, e), "—") for p, e in cols] for m in _methods(t)]
    return _markdown(["method"] + [f"{p}: {e}" for p, e in cols], rows)


def recall(metrics: dict, encoder: str) -> str:
    t = results.rows(metrics, "val").set_index(["method", "protocol", "image_encoder"])
    rows = []
    for m in _methods(t.reset_index()):
        if (m, "field", encoder) in t.index and (m, "paper", encoder) in t.index:
            f, q = t.loc[(m, "field", encoder)], t.loc[(m, "paper", encoder)]
            rows.append([m] + [f"{f[k]:.1f} \\| {q[k]:.1f}" for k in RECALLS])
    return _markdown(["method"] + RECALLS, rows)


def _signed(x: float, digits: int = 1) -> str:
    return f"{x:+.{digits}f}".replace("-", "−")


def gain(metrics: dict, reference: str = "random") -> str:
    t = results.rows(metrics, "val")
    cols = _columns(t)
    grids = {p: results.gain_grid(metrics, p, [e for q, e in cols if q == p], _methods(t), reference)
             for p in dict.fromkeys(q for q, _ in cols)}
    methods = [m for m in _methods(t) if all(m in g.index for g in grids.values())]
    rows = [[LABELS.get(m, m)] + [_signed(grids[p].loc[m, e]) for p, e in cols] for m in methods]
    return _markdown([f"r_mean − {reference}"] + [f"{p}: {e}" for p, e in cols], rows)


def versus(folder: Path, method: str, others: list[str]) -> str:
    runs = pd.read_csv(folder / "runs.csv")
    sel = results.select_epochs(runs)
    sel = sel[sel["selected_on"] == "val"].drop(columns="selected_on")
    found = [o for o in others if o in set(sel["method"])]
    if method not in set(sel["method"]) or not found:
        raise ValueError(f"{folder}/runs.csv has no {method!r} or none of {others}: rerun its stage with them.")
    comp = stats.compare_methods(sel, [(method, o) for o in found], test="welch")
    rows = []
    for r in comp.to_dict("records"):
        rows.append([f"{r['a']} − {r['b']}", r["protocol"], r["image_encoder"], _signed(r["diff"]),
                     _interval(r["ci_low"], r["ci_high"]), _p(r["p"]), f"{r['n_a']} / {r['n_b']}"])
    return _markdown(["difference", "protocol", "student", "r_mean", "95 % interval", "p (Welch)", "seeds"], rows)


def curve(folder: Path) -> str:
    """studies.tm_curve's curve.csv: per candidate, val / test r_mean (ConvNet, field) after each iteration count,
    the chosen set (choice.json) in bold."""
    c = pd.read_csv(folder / "curve.csv")
    chosen = {(v["lr_img"], v["iterations"], m) for m, v in data.load_json(folder / "choice.json")["chosen"].items()}
    its = sorted(c["iterations"].unique())
    rows = []
    for _, g in c.groupby("set", sort=False):
        by = g.set_index("iterations")
        cells = []
        for k in its:
            r = by.loc[k]
            cell = f"{r['val']:.1f} / {r['test']:.1f}"
            cells.append(f"**{cell}**" if (r["lr_img"], k, r["method"]) in chosen else cell)
        rows.append([f"{LABELS.get(g['method'].iloc[0], g['method'].iloc[0])}, pixel lr {g['lr_img'].iloc[0]:g}",
                     *cells])
    return _markdown(["candidate"] + [f"{k} iterations" for k in its], rows)


def chosen_runs(folder: Path) -> tuple[dict, pd.DataFrame]:
    """studies.tm_curve's choice (choice.json's `chosen`) and the students of the chosen sets (runs.csv's rows of
    each chosen candidate and iteration count, without those two columns)."""
    from studies.tm_curve import set_name

    picks = data.load_json(folder / "choice.json")["chosen"]
    runs = pd.read_csv(folder / "runs.csv")
    keep = pd.Series(False, index=runs.index)
    for method, v in picks.items():
        keep |= (runs["set"] == set_name(method, v["lr_img"])) & (runs["iterations"] == v["iterations"])
    return picks, runs[keep].drop(columns=["set", "iterations"])


def chosen_comparison(folder: Path, reference: Path, others: str) -> pd.DataFrame:
    """The sets studies.tm_curve chose (`chosen_runs`) minus each of `others` (comma-separated) from the reference
    folder's runs.csv (the same world's pipeline run), per protocol x student at the val-selected epoch:
    `stats.compare_methods`' table (difference, 95 % interval, Welch's p). A reference that is a metrics file
    (`*.json`: a budget sweep's, whose runs stay in its DVC-cached work folder) gives the same test from both
    sides' metrics.json (r_mean, sd, n: `stats.welch_from_summary`)."""
    if str(reference).endswith(".json"):
        return _chosen_from_metrics(folder, paths.resolve(reference), others.split(","))
    picks, ours = chosen_runs(folder)
    ref = pd.read_csv(paths.resolve(reference) / "runs.csv")
    ref = ref[ref["method"].isin(others.split(","))]
    sel = results.select_epochs(pd.concat([ours, ref], ignore_index=True))
    sel = sel[sel["selected_on"] == "val"].drop(columns="selected_on")
    return stats.compare_methods(sel, [(m, o) for m in picks for o in others.split(",")], test="welch")


def _chosen_from_metrics(folder: Path, reference: Path, others: list[str]) -> pd.DataFrame:
    ours, ref = data.load_json(folder / "metrics.json"), data.load_json(reference)
    if ours["n_pairs"] != ref["n_pairs"]:
        raise ValueError(f"{folder}/metrics.json is at M = {ours['n_pairs']} but {reference} at M = "
                         f"{ref['n_pairs']}; compare sets of one budget.")
    keys = ["method", "protocol", "image_encoder"]
    a_rows, b_rows = results.rows(ours).set_index(keys), results.rows(ref).set_index(keys)
    rows = []
    for a, b in itertools.product(data.load_json(folder / "choice.json")["chosen"], others):
        for protocol, enc in a_rows.loc[a].index:
            if (b, protocol, enc) not in b_rows.index:
                continue
            x, y = a_rows.loc[(a, protocol, enc)], b_rows.loc[(b, protocol, enc)]
            rows.append({"protocol": protocol, "image_encoder": enc, "a": a, "b": b, "mean_a": x["r_mean"],
                         "mean_b": y["r_mean"], **stats.welch_from_summary(x["r_mean"], x["sd"], int(x["n"]),
                                                                           y["r_mean"], y["sd"], int(y["n"]))})
    return pd.DataFrame(rows)


def sets_comparison(reference: Path, set_folders: list[Path], others: str) -> pd.DataFrame:
    """MTT-VL / LoRS over several distillation seeds (`set_folders`: studies.tm_curve outputs of one world and
    budget, each its chosen sets) against `others`' students in the reference folder's runs.csv, compared as
    studies.seeds compares PDS's sets (`seeds.selected`, `set_means`, `compare`: the set as the unit, Welch's test
    of the set means; `one_set_*` is the first folder's set alone)."""
    from studies import seeds

    frames = [chosen_runs(paths.resolve(f))[1].assign(set_seed=k) for k, f in enumerate(set_folders)]
    methods = list(dict.fromkeys(pd.concat(frames)["method"]))
    ref = pd.read_csv(paths.resolve(reference) / "runs.csv")
    frames.append(ref[ref["method"].isin(others.split(","))].assign(set_seed=np.nan))
    sel = seeds.selected(pd.concat(frames, ignore_index=True))
    means = seeds.set_means(sel, methods)
    if (means.groupby(["protocol", "method", "image_encoder"])["set_seed"].nunique() != len(set_folders)).any():
        raise ValueError(f"{', '.join(map(str, set_folders))}: not every set has every method, protocol and student.")
    return seeds.compare(sel, means, others.split(","), first_set=0)


def sets(reference: Path, set_folders: str, others: str) -> str:
    """`sets_comparison` as a table."""
    comp = sets_comparison(reference, [Path(f) for f in set_folders.split(",")], others)
    rows = [[f"{r['a']} − {r['b']}", r["protocol"], r["image_encoder"], f"{r['mean_a']:.1f}", f"{r['sd_sets']:.1f}",
             _signed(r["diff"]), _interval(r["ci_low"], r["ci_high"]), _p(r["p"])] for r in comp.to_dict("records")]
    return _markdown(["difference", "protocol", "student", "r_mean (mean of sets)", "sd (sets)", "difference",
                      "95 % interval (sets)", "p (Welch)"], rows)


def chosen(folder: Path, reference: Path, others: str) -> str:
    """`chosen_comparison` as a table."""
    comp = chosen_comparison(folder, reference, others)
    # the chosen set's r_mean rounded as metrics.json rounds it (2 decimals), so the two files read alike
    rows = [[f"{r['a']} − {r['b']}", r["protocol"], r["image_encoder"], f"{round(r['mean_a'], 2):.1f}", _signed(r["diff"]),
             _interval(r["ci_low"], r["ci_high"]), _p(r["p"])] for r in comp.to_dict("records")]
    return _markdown(["difference", "protocol", "student", "r_mean (chosen set)", "difference", "95 % interval",
                      "p (Welch)"], rows)


def _interval(low: float, high: float) -> str:
    return f"[{_signed(low)}, {_signed(high)}]"


def _p(p: float) -> str:
    # comparisons.csv keeps 4 decimals: a p below 5e-05 reads 0 there
    return "—" if pd.isna(p) else f"{p:.2f}" if p >= 0.01 else f"{p:.0e}" if p >= 1e-4 else "< 1e-04"


def budget(folder: Path, protocol: str) -> str:
    from studies import sweep

    t = sweep.collect(folder)
    t = t[t["protocol"] == protocol]
    if t.empty:
        raise ValueError(f"{folder}: no {protocol!r} protocol in its metrics_*.json.")
    encoders = list(dict.fromkeys(t["image_encoder"]))
    budgets = sorted(t["n_pairs"].unique())
    cell = t.set_index(["method", "n_pairs", "image_encoder"])["r_mean"]
    rows = []
    for m in _methods(t):
        seeds = sorted(t.loc[t["method"] == m, "n"].unique())
        row = [LABELS.get(m, m) + (" (all pairs" + (", 1 seed)" if seeds == [1] else ")") if m == "full" else "")]
        for b in budgets:
            vals = [cell.get((m, b, e)) for e in encoders]
            row.append(" / ".join(f"{v:.1f}" for v in vals) if all(v is not None for v in vals) else "")
        rows.append(row)
    return _markdown(["method"] + [f"M = {b}" for b in budgets], rows)


def ablations(folder: Path, protocol: str) -> str:
    """PDS's two ablations at each budget with an ablations_<M>/ folder: images decoded (PDS) or the real training
    image nearest each prototype (pds_real), text target the mean member caption (PDS's) or the retrieved
    caption; random pairs for reference. metrics_<M>.json sits in `folder` or `folder`/sweep."""
    found = sorted((int(d.name.split("_")[1]), d) for d in folder.glob("ablations_*") if d.is_dir())
    if not found:
        raise ValueError(f"{folder} holds no ablations_<M>/ folder: run `make sweep` (or `make world`).")

    def figures(file: Path, method: str) -> str:
        t = results.rows(data.load_json(file), "val")
        t = t[(t["protocol"] == protocol) & (t["method"] == method)]
        if t.empty:
            raise ValueError(f"{file}: no {method} under the {protocol!r} protocol.")
        return " / ".join(f"{v:.1f}" for v in t["r_mean"])

    rows = []
    for m, d in reversed(found):
        main = folder / f"metrics_{m}.json"
        main = main if main.is_file() else folder / "sweep" / f"metrics_{m}.json"
        caption = d / "pds_and_pds_real__text_caption.json"
        rows += [[str(m), "synthetic (decoded)", figures(main, "pds"), figures(caption, "pds")],
                 [str(m), "real (nearest training image)", figures(d / "pds_real__text_prototype.json", "pds_real"),
                  figures(caption, "pds_real")],
                 [str(m), "random real pairs, for reference", figures(main, "random"), ""]]
    return _markdown(["M", "images at the prototypes", "text target: mean member caption (PDS)",
                      "text target: the retrieved real caption"], rows)


def _rates(folder: Path) -> list[tuple[str, Path]]:
    found = sorted(((d.name[1:], d) for d in folder.glob("p*") if (d / "metrics.json").is_file()),
                   key=lambda x: float(x[0]))
    if not found:
        raise ValueError(f"{folder} holds no p<rate>/metrics.json: run `make mismatch`.")
    return found


def mismatch(folder: Path) -> str:
    frames = [results.rows(data.load_json(d / "metrics.json"), "val").assign(rate=r) for r, d in _rates(folder)]
    t = pd.concat(frames, ignore_index=True)
    t["cell"] = results.cells(t)
    cols = list(dict.fromkeys(zip(t["protocol"], t["rate"], strict=True)))
    cell = t.set_index(["method", "protocol", "rate"])["cell"]
    rows = [[LABELS.get(m, m)] + [cell.get((m, p, r), "—") for p, r in cols] for m in _methods(t)]
    return _markdown(["method"] + [f"{p} p = {r}" for p, r in cols], rows)


def filter_table(folder: Path) -> str:
    rows = []
    for r, d in _rates(folder):
        if float(r) == 0:
            continue
        f = data.load_json(d / "filter.json")
        rows.append([r, f"{100 * f['filter_recall']:.1f} %", f"{100 * f['mismatched_kept']:.1f} %",
                     f"{100 * f['mismatched_members']:.1f} %", f"{f['members']:,}"])
    return _markdown(["p", "mismatched pairs the filter drops", "mismatched among the kept pairs",
                      "mismatched among the intersections' pairs", "pairs in the intersections"], rows)


def seeds(folder: Path, methods: str = "", baselines: str = "") -> str:
    """studies.seeds' comparisons.csv: `methods` (PDS's, by default all) minus `baselines` (default: all)."""
    c = pd.read_csv(folder / "comparisons.csv")
    if methods:
        c = c[c["a"].isin(methods.split(","))]
    if baselines:
        c = c[c["b"].isin(baselines.split(","))]
    rows = [[f"{r['a']} − {r['b']}", r["protocol"], r["image_encoder"], _signed(r["diff"]),
             _interval(r["ci_low"], r["ci_high"]), _p(r["p"]),
             _interval(r["one_set_ci_low"], r["one_set_ci_high"]), _p(r["one_set_p"])]
            for r in c.to_dict("records")]
    return _markdown(["difference", "protocol", "student", "r_mean difference", "95 % interval (sets)", "p (Welch)",
                      "one set: interval", "one set: p"], rows)


def render(spec: str) -> str:
    kind, folder, *args = spec.split()
    folder = paths.resolve(folder)
    if kind in STUDY_KINDS:
        return STUDY_KINDS[kind](folder, *args)
    metrics = data.load_json(folder / "metrics.json") if kind != "versus" else None
    if kind == "rmean":
        return rmean(metrics)
    if kind == "recall":
        return recall(metrics, args[0])
    if kind == "gain":
        return gain(metrics)
    if kind == "versus":
        return versus(folder, args[0], args[1].split(","))
    raise ValueError(f"unknown table kind {kind!r} in <!-- table: {spec} -->; use rmean, recall, gain, versus, "
                     f"{', '.join(STUDY_KINDS)}.")


STUDY_KINDS = {"budget": budget, "ablations": ablations, "mismatch": mismatch, "filter": filter_table, "seeds": seeds,
               "curve": curve, "chosen": chosen, "sets": sets}


def update(text: str) -> str:
    """`text` with every marked table regenerated."""
    return MARKER.sub(lambda m: m[1] + render(m["spec"]) + m[4], text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pages", nargs="+")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if a page is out of date")
    args = p.parse_args(argv)
    stale = []
    for page in map(paths.resolve, args.pages):
        text = page.read_text()
        new = update(text)
        if new != text:
            stale.append(str(page))
            if not args.check:
                data.atomic_write(page, lambda tmp, new=new: tmp.write_text(new))
    verb = "out of date" if args.check else "rewritten"
    print(f"{len(stale)} page(s) {verb}" + (f": {', '.join(stale)}" if stale else ""))
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
