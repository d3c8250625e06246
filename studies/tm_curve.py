"""MTT-VL and LoRS run longer than the pipeline's 150 iterations: the iteration curve, and the set chosen on val by
the rule of results/tm_curve/README.md (written before the runs).

    dvc repro studies/dvc.yaml:tm_curve@toyflickr     # or python -m studies.tm_curve run --world ... (below)

On one world's embeddings, caption features and images: expert trajectories trained as the `tm` stage trains them,
then each candidate (method, pixel lr) distilled once for the budget of iterations with its set kept at every
snapshot (`pds.tm.distill`'s snapshots equal shorter runs). Every kept set is evaluated with the ConvNet student
under the field protocol (the curve); per method the set with the best val r_mean is chosen (`choose`) and
evaluated with every student under both protocols. Writes, under `out`: runs.csv, curve.csv, choice.json,
metrics.json (a tree DVC reads), summary.md and curve.png. Kept sets and experts go to `work`.
"""

import argparse
import functools
import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch

from pds import (
    artifacts,
    config,
    data,
    evaluate,
    models,
    paths,
    plots,
    results,
    text_features,
    tm,
    tm_evaluate,
)

CURVE_ENCODER, CURVE_PROTOCOL = "convnet", "field"  # the distillation architecture; the field's trainable student


def parse_candidates(spec: str) -> list[tuple[str, float]]:
    """'tm:1000,lors:100' -> [('tm', 1000.0), ('lors', 100.0)]; one clear error per bad entry."""
    out = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        method, _, lr = item.partition(":")
        try:
            lr_img = float(lr)
        except ValueError:
            lr_img = -1.0
        if method not in tm.METHODS or lr_img <= 0:
            raise ValueError(f"tm_curve candidate {item!r}: write <method>:<pixel lr> with a method of "
                             f"{', '.join(tm.METHODS)} and a lr > 0 (studies/params.yaml tm_curve.candidates).")
        out.append((method, lr_img))
    if not out or len(set(out)) != len(out):
        raise ValueError(f"tm_curve candidates {spec!r}: give at least one, each once (studies/params.yaml).")
    return out


def set_name(method: str, lr_img: float) -> str:
    return f"{method}_lr{lr_img:g}"


def match_settings(t: dict, iterations: int, lr_img: float) -> tm.MatchSettings:
    """The matching settings of params.yaml's `tm:` section (its keys that name a `MatchSettings` field, cast to that
    field's type), with a candidate's budget of iterations and pixel lr."""
    fields = tm.MatchSettings.__dataclass_fields__
    values = {k: type(fields[k].default)(v) for k, v in t.items() if k in fields}
    return tm.MatchSettings(**{**values, "iterations": int(iterations), "lr_img": float(lr_img)})


def val_figures(runs: pd.DataFrame) -> pd.DataFrame:
    """Per student (set, iterations, seed, protocol, encoder): the val r_mean at its val-selected epoch and the
    test r_mean at that epoch (`pds.results.select_epochs`)."""
    keys = ["set", "iterations"]
    out = []
    for (name, its), g in runs.groupby(keys, sort=False):
        val = g[g["split"] == "val"].groupby(list(results.RUN_KEYS), sort=False)["r_mean"].max().rename("val")
        sel = results.select_epochs(g)
        test = sel[sel["selected_on"] == "val"].set_index(list(results.RUN_KEYS))["r_mean"].rename("test")
        both = pd.concat([val, test], axis=1).reset_index()
        out.append(both.assign(set=name, iterations=int(its)))
    return pd.concat(out, ignore_index=True)


def choose(curve: pd.DataFrame) -> pd.DataFrame:
    """The rule (results/tm_curve/README.md): per method, the (set, iterations) row of `curve` (columns method,
    set, lr_img, iterations, val = mean val r_mean over seeds) with the highest val; ties when equal rounded to
    0.1 go to fewer iterations, then to the lower pixel lr."""
    c = curve.assign(_val=curve["val"].round(1))
    c = c.sort_values(["method", "_val", "iterations", "lr_img"], ascending=[True, False, True, True], kind="stable")
    return c.groupby("method", sort=False).head(1).drop(columns="_val").reset_index(drop=True)


def plateau(loss, window: int = 100, tol: float = 0.01) -> dict:
    """Whether the matching loss stopped improving: its mean over the last `window` iterations against the mean
    over the `window` before (relative change); not decided with fewer than 2 x window iterations."""
    loss = np.asarray(loss, dtype=float)
    if len(loss) < 2 * window:
        return {"last": None, "before": None, "change": None, "stopped_improving": None}
    last, before = float(loss[-window:].mean()), float(loss[-2 * window:-window].mean())
    change = (last - before) / before
    return {"last": round(last, 4), "before": round(before, 4), "change": round(change, 4),
            "stopped_improving": bool(change > -tol)}


def reuse_experts(folder, features, t: dict, seed: int) -> tuple[tm.Experts, artifacts.Artifact]:
    """Another run's experts (`folder`: a tm_curve work folder's experts/) and their opened run, refused unless
    trained on these caption features with params.yaml's expert settings: experts do not depend on the budget M."""
    run = artifacts.open_artifact(folder, "experts", [features])
    experts = tm.load_experts(folder)
    want = {"n_experts": int(t["n_experts"]), "epochs": int(t["epochs"]), "lr_image": float(t["lr_image"]),
            "lr_text": float(t["lr_text"]), "seed": seed}
    got = {"n_experts": experts.n_experts, "epochs": experts.epochs, **{k: experts.settings.get(k) for k in
                                                                         ("lr_image", "lr_text", "seed")}}
    if got != want:
        raise ValueError(f"{folder}: experts trained with {got}, but params.yaml tm: / base.seed say {want}; "
                         "rerun the stage that made them (or leave out --experts to train new ones).")
    return experts, run


def distill_candidates(world_dirs: dict, work: Path, candidates, snapshots, p: dict, n_pairs: int,
                       experts_from=None, distill_seed: int | None = None) -> tuple[dict, dict]:
    """Experts (trained, or `experts_from`'s: `reuse_experts`; seed base.seed), then every candidate distilled
    once for `n_pairs` pairs with seed `distill_seed` (default base.seed: its initial pairs and its draws of
    experts, start epochs and batches) and its snapshots saved to work/<set>/it<k>: ({set: {k: folder}},
    {set: loss array})."""
    t, seed = p["tm"], int(p["base"]["seed"])
    distill_seed = seed if distill_seed is None else int(distill_seed)
    encoders_dir = world_dirs["encoders"]
    load = functools.partial(models.load_image_encoder, t["encoder"], p["evaluate"]["pretrained"], encoders_dir)
    size = load().image_size
    train, pairs = tm.load_train_pairs(world_dirs["embeddings"], world_dirs["text_features"],
                                       world_dirs["dataset_root"], size)
    features = artifacts.open_artifact(world_dirs["text_features"], "text_features")
    if experts_from is not None:
        experts, expert_run = reuse_experts(paths.resolve(experts_from), features, t, seed)
    else:
        # as the tm stage: momentum 0, no weight decay, batch 128, one caption per image per epoch, 2 processes
        experts = tm.train_experts(load, train, int(t["n_experts"]), int(t["epochs"]), float(t["lr_image"]),
                                   float(t["lr_text"]), seed=seed, workers=2)
        tm.save_experts(work / "experts", experts, [features])
        expert_run = artifacts.open_artifact(work / "experts", "experts", [features])
    enc = models.load_image_encoder(experts.encoder, "none", encoders_dir)  # structure only
    caption_ids = pairs["caption_id"].to_numpy(np.int64)
    captions = pairs["caption"].astype(str).to_numpy()
    folders, losses = {}, {}
    for method, lr_img in candidates:
        name = set_name(method, lr_img)
        settings = match_settings(t, max(snapshots), lr_img)

        def save(d: tm.Distilled, name=name):
            nearest = tm.nearest_captions(d.text, train.text)
            k = len(d.loss)
            folders.setdefault(name, {})[k] = tm.save_distilled(
                work / name / f"it{k}", d, captions[nearest], caption_ids[nearest], caption_ids[d.init_pairs],
                [expert_run, features])
            print(f"{name}: {k} iterations kept" + (f", loss {d.loss[-20:].mean():.3f}" if k else ""), flush=True)

        result = tm.distill(method, experts, enc.model, enc.num_features, train, n_pairs, settings, distill_seed,
                            snapshots=snapshots, on_snapshot=save)
        losses[name] = result.loss
    return folders, losses


def load_world(world_dirs: dict, p: dict, encoders) -> dict:
    """What every student evaluation of the world reads, loaded once: the evaluation data at the first encoder's
    image size (as the tm_evaluate stage), the caption embeddings, the encoder loader, settings and seeds."""
    e, base = p["evaluate"], p["base"]
    emb = Path(world_dirs["embeddings"])
    images, captions = data.load_table(emb / "images.parquet"), data.load_table(emb / "captions.parquet")
    student_text = text_features.load_text_features(world_dirs["text_features"], captions, e["text_encoder"])
    load_encoder = functools.partial(models.load_image_encoder, pretrained=e["pretrained"],
                                     folder=world_dirs["encoders"])
    size = load_encoder(encoders[0]).image_size
    return {"ev": evaluate.load_evaluation_data(world_dirs["dataset_root"], images, captions, student_text, size,
                                                progress=paths.progress()),
            "clip_text": data.load_npy(emb / "text.npy"), "student_text": student_text, "size": size,
            "load_encoder": load_encoder, "device": paths.device(),
            "seeds": [int(base["seed"]) + i for i in range(int(e["seeds"]))]}


def evaluate_folders(world: dict, sets: list, encoders, protocols, p: dict) -> pd.DataFrame:
    """Students (3 seeds, params.yaml evaluate:) on each (set name, method, iterations, folder) of `sets` under
    `protocols` with `encoders`, as the tm_evaluate stage trains them (`world`: `load_world`'s); rows labelled
    set / iterations."""
    settings = evaluate.protocol_settings(protocols, p["evaluate"], world["device"], paths.batch_size(100))
    out = []
    for name, method, k, folder in sets:
        r = tm_evaluate.evaluate_sets(world["ev"], {method: tm_evaluate.load_set(folder, world["size"])},
                                      world["clip_text"], world["student_text"], encoders, world["load_encoder"],
                                      world["seeds"], settings, evaluate.default_workers(world["device"]))
        out.append(r.assign(set=name, iterations=int(k)))
        print(f"evaluated {name} after {k} iterations: {r.groupby(list(results.RUN_KEYS)).ngroups} students",
              flush=True)
    return pd.concat(out, ignore_index=True)


def curve_table(runs: pd.DataFrame, candidates, losses: dict) -> pd.DataFrame:
    """Per candidate and iteration count (ConvNet, field): val and test r_mean (mean and sample sd over seeds)
    and the matching loss's mean over the 20 iterations before the snapshot."""
    fig = val_figures(runs[(runs["protocol"] == CURVE_PROTOCOL) & (runs["image_encoder"] == CURVE_ENCODER)])
    spec = {set_name(m, r): (m, r) for m, r in candidates}
    rows = []
    for (name, k), g in fig.groupby(["set", "iterations"], sort=False):
        loss = losses[name][:k]
        rows.append({"set": name, "method": spec[name][0], "lr_img": spec[name][1], "iterations": k,
                     "val": round(g["val"].mean(), 2), "val_sd": round(results.sample_sd(g["val"]), 2),
                     "test": round(g["test"].mean(), 2), "test_sd": round(results.sample_sd(g["test"]), 2),
                     "n": int(g["seed"].nunique()),
                     "loss": round(float(loss[-20:].mean()), 4) if k else None})
    return pd.DataFrame(rows).sort_values(["set", "iterations"], kind="stable").reset_index(drop=True)


def plot(curve: pd.DataFrame, losses: dict, chosen: pd.DataFrame, world: str, path) -> None:
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    seen: dict[str, int] = {}
    for name, g in curve.groupby("set", sort=False):
        method = g["method"].iloc[0]
        ls = ("-", "--", ":")[seen.get(method, 0) % 3]  # a method's candidates: one colour, one dash each
        seen[method] = seen.get(method, 0) + 1
        colour = plots.method_colour(method)
        ax.errorbar(g["iterations"], g["test"], yerr=g["test_sd"], color=colour, ls=ls, marker="o", capsize=3,
                    label=f"{method}, pixel lr {g['lr_img'].iloc[0]:g}")
        smooth = pd.Series(losses[name]).rolling(20, min_periods=1).mean()  # one iteration's loss is one expert draw
        bx.plot(np.arange(1, len(smooth) + 1), smooth, color=colour, ls=ls, lw=1,
                label=f"{method}, pixel lr {g['lr_img'].iloc[0]:g}")
    for _, c in chosen.iterrows():
        ax.plot([c["iterations"]], [c["test"]], marker="*", ms=16, color=plots.method_colour(c["method"]),
                mec="black", ls="none")
    ax.set(xlabel="matching iterations", ylabel="test r_mean (ConvNet, field)",
           title=f"{world}: students on the kept sets (★ chosen on val)")
    bx.axhline(1.0, color="grey", ls=":", lw=1)
    bx.set(xlabel="iteration", ylabel="matching loss, mean of 20 iterations",
           title="matching loss (1: no better than the expert start)")
    ax.legend(fontsize=8)
    bx.legend(fontsize=8)
    fig.tight_layout()
    data.atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def summary_md(world: str, curve: pd.DataFrame, chosen: pd.DataFrame, metrics: dict, convergence: dict) -> str:
    lines = [f"# MTT-VL and LoRS on `{world}`: iteration curve and the sets chosen on val", "",
             "Rule and budget: results/tm_curve/README.md (written before the runs). Curve: ConvNet students, "
             "field protocol, r_mean mean ± sample sd over seeds (val: at each student's val-selected epoch; "
             "test: at that epoch).", "",
             "| candidate | iterations | val r_mean | test r_mean | matching loss |", "|---|---|---|---|---|"]
    for _, r in curve.iterrows():
        loss = "" if pd.isna(r["loss"]) else f"{r['loss']:.3f}"
        lines.append(f"| {r['set']} | {r['iterations']} | {r['val']:.1f} ± {r['val_sd']:.1f} | "
                     f"{r['test']:.1f} ± {r['test_sd']:.1f} | {loss} |")
    lines += ["", "Matching loss over the last 100 iterations against the 100 before (stopped improving: within 1 %):", ""]
    for name, c in convergence.items():
        verdict = {True: "stopped improving", False: "still improving", None: "not decided"}[c["stopped_improving"]]
        lines.append(f"- {name}: {c['before']} -> {c['last']} ({verdict})")
    lines += ["", "Chosen on val: " + "; ".join(f"{r['method']}: pixel lr {r['lr_img']:g}, {r['iterations']} iterations"
                                             for _, r in chosen.iterrows()), "",
              "| protocol | method | convnet | resnet | vit |", "|---|---|---|---|---|"]
    for protocol in ("field", "paper"):
        for method in chosen["method"]:
            by = metrics.get(protocol, {}).get(method, {})
            cells = [f"{by[e]['r_mean']:.1f} ± {by[e]['sd']:.1f}" if e in by else "" for e in ("convnet", "resnet", "vit")]
            lines.append(f"| {protocol} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(world: str, world_dirs: dict, work, out, candidates: str, snapshots: str, params_file="params.yaml",
        n_pairs: int | None = None, experts=None, seed: int | None = None) -> None:
    """One world at budget `n_pairs` (default params.yaml base.n_pairs); `experts`: reuse another run's; `seed`:
    the distillation's (default base.seed; students keep theirs)."""
    p = config.load(paths.resolve(params_file))
    n_pairs = int(p["base"]["n_pairs"]) if n_pairs is None else int(n_pairs)
    if n_pairs < 1:
        raise ValueError(f"tm_curve --n-pairs {n_pairs}: the budget M must be at least 1.")
    cands = parse_candidates(candidates)
    snaps = sorted({int(s) for s in snapshots.split(",") if s.strip()})
    if not snaps or snaps[0] != 0 or len(snaps) < 2:
        raise ValueError(f"tm_curve snapshots {snapshots!r}: list 0 and at least one later iteration count "
                         "(studies/params.yaml tm_curve.snapshots).")
    world_dirs = {k: paths.resolve(v) for k, v in world_dirs.items()}
    work, out = paths.resolve(work), paths.resolve(out)
    torch.set_num_threads(evaluate.num_threads(1))
    folders, losses = distill_candidates(world_dirs, work, cands, snaps, p, n_pairs, experts, seed)
    method_of = {set_name(m, r): m for m, r in cands}
    e = p["evaluate"]
    encoders = [n for n in e["image_encoders"].split(",") if n]
    protocols = [q for q in e["protocol"].split(",") if q]
    world_data = load_world(world_dirs, p, encoders)
    # after 0 iterations every candidate of a method holds the same random real pairs: evaluate them once
    first = {}
    for name, kept in folders.items():
        first.setdefault(method_of[name], (name, kept[0]))
    todo = [(name, method_of[name], k, f) for name, kept in folders.items() for k, f in kept.items() if k > 0]
    todo += [(name, method, 0, f) for method, (name, f) in first.items()]
    runs = evaluate_folders(world_data, todo, [CURVE_ENCODER], [CURVE_PROTOCOL], p)
    for method, (name, _) in first.items():  # the shared start, labelled for every candidate of its method
        copies = [runs[(runs["set"] == name) & (runs["iterations"] == 0)].assign(set=other)
                  for other in folders if method_of[other] == method and other != name]
        runs = pd.concat([runs, *copies], ignore_index=True)
    curve = curve_table(runs, cands, losses)
    chosen = choose(curve)
    rest = [(r["set"], r["method"], int(r["iterations"]), folders[r["set"]][int(r["iterations"])])
            for _, r in chosen.iterrows()]
    more = evaluate_folders(world_data, rest, encoders, protocols, p)
    # the chosen sets' ConvNet field students are the curve's own: not trained twice
    more = more[~((more["protocol"] == CURVE_PROTOCOL) & (more["image_encoder"] == CURVE_ENCODER))]
    keep = pd.concat([runs.merge(chosen[["set", "iterations"]], on=["set", "iterations"]), more], ignore_index=True)
    metrics = results.summarise(keep.drop(columns=["set", "iterations"]), world, n_pairs,
                                list(chosen["method"]))
    convergence = {name: plateau(loss) for name, loss in losses.items()}
    choice = {"chosen": {r["method"]: {"lr_img": float(r["lr_img"]), "iterations": int(r["iterations"]),
                                       "val": float(r["val"])} for _, r in chosen.iterrows()},
              "curve": {name: {str(int(r["iterations"])): {"val": float(r["val"]), "test": float(r["test"])}
                               for _, r in g.iterrows()} for name, g in curve.groupby("set", sort=False)},
              "convergence": convergence, "budget": max(snaps), "snapshots": snaps,
              "candidates": [set_name(m, r) for m, r in cands]}
    out.mkdir(parents=True, exist_ok=True)
    results.save_outputs(out, pd.concat([runs, more], ignore_index=True), metrics)
    data.atomic_write(out / "curve.csv", lambda tmp: curve.to_csv(tmp, index=False))
    data.save_json(out / "choice.json", choice)  # a metrics file too: DVC reads chosen / curve / convergence
    plot(curve, losses, chosen, world, out / "curve.png")
    data.atomic_write(out / "summary.md",
                      lambda tmp: Path(tmp).write_text(summary_md(world, curve, chosen, metrics, convergence)))
    print(json.dumps(choice["chosen"]))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="one world: experts, candidates with snapshots, curve, choice, chosen sets")
    r.add_argument("--world", required=True)
    r.add_argument("--embeddings", required=True)
    r.add_argument("--text-features", required=True)
    r.add_argument("--dataset-root", required=True)
    r.add_argument("--encoders", required=True)
    r.add_argument("--candidates", required=True, help="method:pixel_lr,... e.g. tm:1000,lors:100,lors:1000")
    r.add_argument("--snapshots", required=True, help="iteration counts, 0 first, the last the budget")
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--n-pairs", type=int, default=None, help="the budget M (default: params.yaml base.n_pairs)")
    r.add_argument("--experts", default=None, help="reuse these experts (another run's work/experts) instead of "
                   "training them")
    r.add_argument("--seed", type=int, default=None, help="the distillation's seed (default: params.yaml base.seed)")
    a = ap.parse_args(argv)
    run(a.world, {"embeddings": a.embeddings, "text_features": a.text_features, "dataset_root": a.dataset_root,
                  "encoders": a.encoders}, a.work, a.out, a.candidates, a.snapshots, n_pairs=a.n_pairs,
        experts=a.experts, seed=a.seed)


if __name__ == "__main__":
    main()
