"""Calibrate a realistic toy world on the baselines only, before PDS ever runs on it.

    python -m studies.calibrate --name c01 --knobs caption_mention_rate=0.5,clutter=1.5,zipf_exponent=1,n_shapes=15

One candidate = one set of `pds.toy.world.Knobs`. For it this generates the world (Flickr30k-shaped, the
default world's sizes and seed), pretrains the ConvNet student encoder on that world's scenes exactly as
the `toymodels` stage would (`pds.toy.encoders`, balanced concepts), encodes every caption with the frozen
MiniLM of the field's protocol, and trains ConvNet students under the field protocol on three training
sets: 100 and 500 random real pairs, and the full training set, the latter to convergence (evaluated
every epoch, its epoch chosen on val). Nothing else runs: no CLIP, no prototypes, no PDS.

Targets (Flickr30k's published figures, `../shared/research/field_numbers.md`): random@100 / full in
0.06-0.14 and random@500 / full in 0.16-0.36, with full >= 40 r_mean so the task stays learnable. The
decision reads the *val* r_mean at each run's val-selected epoch (the test split is never used to choose);
test figures are recorded beside it. Each candidate writes `results/calibration/<name>/` (summary.json,
runs.csv); `python -m studies.calibrate --plot` redraws `results/calibration/calibration.png` from all of them.
Worlds, encoders and caption features are kept under `build/calibration/<name>/`, so a rerun resumes.
"""

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pds import config, data, evaluate, models, text_features
from pds.paths import resolve
from pds.toy import encoders, world

TARGETS = {"random@100": (0.06, 0.14), "random@500": (0.16, 0.36)}
FULL_MIN = 40.0
FLICKR = {"random@100": 4.8 / 54.7, "random@500": 13.3 / 54.7}  # field_numbers.md: r_mean of random / full


def parse_knobs(text: str) -> world.Knobs:
    """`name=value,...` -> Knobs (one-line error naming the bad entry)."""
    names = {f for f in world.Knobs.__dataclass_fields__}
    kwargs = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise ValueError(f"--knobs entry {item!r}: use name=value with a name among {', '.join(sorted(names))}.")
        kwargs[key] = int(value) if key in ("n_shapes", "n_colours") else float(value)
    if kwargs.get("mismatch_rate", 0):
        raise ValueError("--knobs mismatch_rate: keep it 0 when calibrating (it is swept separately: make mismatch).")
    return world.Knobs(**kwargs)


def prepare(work: Path, knobs: world.Knobs, n_train: int, n_val: int, n_test: int, seed: int,
            encoder_seed: int, threads: int) -> tuple[Path, Path, np.ndarray]:
    """Generate the world, pretrain the ConvNet and encode the captions, each step skipped when a previous run
    finished it for these knobs. Returns (world folder, encoder folder, caption features)."""
    # the folder is named like the default world's, so its annotation file has the default world's name
    root, enc_dir = work / "toyworld", work / "encoders"
    stamp = {"knobs": knobs.non_default(), "n": [n_train, n_val, n_test], "seed": seed, "encoder_seed": encoder_seed}
    marks = work / "prepared.json"
    done = data.load_json(marks) if marks.is_file() else {}
    if done.get("stamp") != stamp:
        done = {"stamp": stamp}
    torch.set_num_threads(threads)
    if not done.get("world"):
        t = time.perf_counter()
        kw = knobs.non_default()
        kw.setdefault("caption_mention_rate", "legacy")
        world.generate_toyworld(root, n_train, n_val, n_test, 32, seed, **kw)
        done["world"] = round(time.perf_counter() - t)
        data.save_json(marks, done)
        print(f"world: {done['world']} s", flush=True)
    if not done.get("encoder"):
        t = time.perf_counter()
        encoders.pretrain_toy_encoders(enc_dir, ["convnet"], seed=encoder_seed, progress=False, knobs=knobs)
        done["encoder"] = round(time.perf_counter() - t)
        data.save_json(marks, done)
        print(f"convnet pretraining: {done['encoder']} s", flush=True)
    if not done.get("text"):
        t = time.perf_counter()
        _, captions = data.load_dataset(root)
        feats = text_features.encode_texts(models.load_text_encoder("minilm"),
                                           captions["caption"].astype(str).tolist(), progress=False)
        data.save_npy(work / "text.npy", feats)
        done["text"] = round(time.perf_counter() - t)
        done["distinct_captions"] = int(captions["caption"].nunique())
        data.save_json(marks, done)
        print(f"caption features: {done['text']} s ({done['distinct_captions']} distinct of {len(captions)})",
              flush=True)
    return root, enc_dir, data.load_npy(work / "text.npy")


def train_baselines(root: Path, enc_dir: Path, feats: np.ndarray, seeds, workers: int,
                    settings: evaluate.TrainSettings) -> pd.DataFrame:
    """ConvNet students (field protocol) on random@100 and random@500 (each seed) and the full data (the seeds
    `settings.full_seeds` keeps), trained by `evaluate.run_evaluation` over `workers` processes. Returns its
    runs table with a `budget` column (random@100, random@500, full)."""
    images, captions = data.load_dataset(root)
    ev = evaluate.load_evaluation_data(root, images, captions, feats, 32, progress=False)
    load = functools.partial(models.load_image_encoder, pretrained="toy", folder=str(enc_dir))
    runs = pd.concat([evaluate.run_evaluation(ev, methods, ["convnet"], load, None, None, budget, seeds, settings,
                                              workers, progress=False)[0]
                      for budget, methods in ((100, ["random", "full"]), (500, ["random"]))], ignore_index=True)
    runs.insert(0, "budget", np.where(runs["method"] == "full", "full", "random@" + runs["n_train"].astype(str)))
    return runs


def figures(runs: pd.DataFrame) -> dict:
    """Per budget: mean over seeds of the val r_mean at the val-selected epoch (the calibration figure) and of
    the test r_mean there; for full also the selected epoch and the val curve."""
    out = {}
    for budget, g in runs.groupby("budget", sort=False):
        val = g[g["split"] == "val"]
        best = val.loc[val.groupby("seed")["r_mean"].idxmax()]  # first maximum: earliest epoch on ties
        test = g[g["split"] == "test"].set_index(["seed", "epoch"])["r_mean"]
        out[budget] = {"val_r_mean": round(float(best["r_mean"].mean()), 2),
                       "test_r_mean": round(float(np.mean([test[(s, e)] for s, e in zip(best["seed"], best["epoch"],
                                                                                          strict=True)])), 2),
                       "seeds": int(best["seed"].nunique()), "epoch": [int(e) for e in best["epoch"]]}
        if budget == "full":
            out[budget]["val_curve"] = [round(float(v), 2) for v in val.sort_values("epoch")["r_mean"]]
    return out


def verdict(fig: dict, split: str = "val") -> dict:
    full = fig["full"][f"{split}_r_mean"]
    ratios = {b: round(fig[b][f"{split}_r_mean"] / full, 4) for b in TARGETS}
    ok = {b: TARGETS[b][0] <= r <= TARGETS[b][1] for b, r in ratios.items()}
    ok["full>=40"] = full >= FULL_MIN
    return {"ratios": ratios, "in_range": ok, "all_in_range": all(ok.values()),
            "distance_to_flickr": round(float(sum(np.log(ratios[b] / FLICKR[b]) ** 2 for b in TARGETS)), 4)}


def calibrate(name: str, knobs: world.Knobs, out_dir="results/calibration", work_dir="build/calibration",
              seeds=(42, 43, 44), full_epochs: int = 12, workers: int = 2, n_train: int = 10000, n_val: int = 1000,
              n_test: int = 1000, seed: int = 0, encoder_seed: int = 1234, note: str = "") -> dict:
    start = time.perf_counter()
    work = resolve(work_dir) / name
    root, enc_dir, feats = prepare(work, knobs, n_train, n_val, n_test, seed, encoder_seed, workers)
    ev = config.load()["evaluate"]  # the students every stage trains
    settings = evaluate.TrainSettings(epochs=int(ev["epochs"]), full_epochs=full_epochs, lr=float(ev["lr"]),
                                      lr_image=float(ev["lr_image"]), batch_size=int(ev["batch_size"]),
                                      eval_every=int(ev["eval_every"]), full_one_per_image=True, protocol="field",
                                      full_eval_every=1, full_seeds=1)
    t = time.perf_counter()
    runs = train_baselines(root, enc_dir, feats, list(seeds), workers, settings)
    fig = figures(runs)
    enc_cfg = data.load_json(enc_dir / "convnet" / "config.json")
    summary = {"name": name, "note": note, "knobs": knobs.non_default(), "world": {"n_train": n_train, "n_val": n_val,
               "n_test": n_test, "seed": seed}, "student": "convnet", "protocol": "field",
               "settings": {"epochs": settings.epochs, "full_epochs": full_epochs, "full_eval_every": 1,
                            "full_one_per_image": True, "lr": settings.lr, "lr_image": settings.lr_image},
               "encoder_pretraining_val_accuracy": enc_cfg["pretraining"]["val_accuracy"],
               "prepared": {k: v for k, v in data.load_json(work / "prepared.json").items() if k != "stamp"},
               "figures": fig, "val": verdict(fig, "val"), "test": verdict(fig, "test"),
               "seconds": {"students": round(time.perf_counter() - t), "total": round(time.perf_counter() - start)},
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}
    out = resolve(out_dir) / name
    data.atomic_write(out / "runs.csv", lambda tmp: runs.to_csv(tmp, index=False, float_format="%.4f"))
    data.save_json(out / "summary.json", summary)
    return summary


def collect(out_dir="results/calibration") -> list[dict]:
    """Every candidate's summary.json, in name order."""
    return [data.load_json(p) for p in sorted(resolve(out_dir).glob("*/summary.json"))]


def plot(out_dir="results/calibration") -> Path:
    """results/calibration/calibration.png: each candidate's two ratios (val) against the target bands and
    Flickr30k's values, and its full-data r_mean against the floor of 40."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pds.plots import METHOD_COLOURS, MISS_COLOUR, SERIES_COLOURS

    band, line, test_colour = MISS_COLOUR, SERIES_COLOURS[1], SERIES_COLOURS[0]  # range, reference, test marks

    runs = collect(out_dir)
    if not runs:
        raise FileNotFoundError(f"no {out_dir}/*/summary.json yet: run python -m studies.calibrate --name ... first.")
    names = [r["name"] for r in runs]
    x = np.arange(len(runs))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), constrained_layout=True)
    for ax, budget in zip(axes[:2], TARGETS, strict=False):
        lo, hi = TARGETS[budget]
        ax.axhspan(lo, hi, color=band, alpha=0.6, label="target range")
        ax.axhline(FLICKR[budget], color=line, ls="--", lw=1.5, label="Flickr30k")
        ax.plot(x, [r["val"]["ratios"][budget] for r in runs], "o", ms=9, color=METHOD_COLOURS["random"], label="val")
        ax.plot(x, [r["test"]["ratios"][budget] for r in runs], "x", ms=9, mew=2, color=test_colour, label="test")
        ax.set_title(f"{budget} / full (ConvNet, field)", fontsize=11)
        ax.set_ylim(0, 0.6)
    axes[2].axhline(FULL_MIN, color=line, ls="--", lw=1.5, label="floor 40")
    axes[2].plot(x, [r["figures"]["full"]["val_r_mean"] for r in runs], "o", ms=9, color=METHOD_COLOURS["full"], label="val")
    axes[2].plot(x, [r["figures"]["full"]["test_r_mean"] for r in runs], "x", ms=9, mew=2, color=test_colour, label="test")
    axes[2].set_title("full data r_mean", fontsize=11)
    axes[2].set_ylim(0, 100)
    for ax in axes:
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=9)
        ax.set_xlim(-0.5, len(runs) - 0.5)
        ax.legend(fontsize=8, loc="upper right")
    path = resolve(out_dir) / "calibration.png"
    data.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def world_examples(worlds=("toyworld", "toyflickr"), n: int = 6, out_dir="results/calibration",
                   raw_dir="data/raw") -> Path:
    """results/calibration/worlds.png: the first `n` training images of each generated world (data/raw/<world>)
    with their first caption, one row per world, so the difference is seen, not only measured."""
    import matplotlib

    matplotlib.use("Agg")
    from pds import plots

    pixels, texts = [], []
    for name in worlds:
        root = resolve(raw_dir) / name
        images, captions = data.load_dataset(root, ann_file=world.ANN_FILE, preprocess=False)
        first = images[images["split"] == "train"].head(n)
        caps = captions.groupby("image_id")["caption"].first()
        pixels += [data.load_image(root, p) for p in first["path"]]
        texts += [caps[int(i)] for i in first["image_id"]]
    fig = plots.montage(pixels, texts, ncols=n, kinds=["real"] * len(pixels))
    fig.suptitle("first training images and their first caption; rows: " + ", ".join(worlds), y=1.02)
    path = resolve(out_dir) / "worlds.png"
    data.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Calibrate a realistic toy world on the baselines (no PDS).")
    p.add_argument("--name", help="candidate name: results/calibration/<name>/")
    p.add_argument("--knobs", default="", help="name=value,... of pds.toy.world.Knobs (mismatch_rate stays 0)")
    p.add_argument("--note", default="", help="why this candidate (recorded in its summary)")
    p.add_argument("--seeds", default="42,43,44", help="seeds of the random students (full: the first)")
    p.add_argument("--full-epochs", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--plot", action="store_true", help="only redraw calibration.png from the recorded candidates")
    p.add_argument("--examples", action="store_true", help="only draw worlds.png: images of data/raw/toyworld and toyflickr")
    a = p.parse_args(argv)
    if a.examples:
        print(f"wrote {world_examples()}")
        return
    if not a.plot:
        if not a.name:
            p.error("--name is required (or --plot).")
        s = calibrate(a.name, parse_knobs(a.knobs), seeds=[int(v) for v in a.seeds.split(",")],
                      full_epochs=a.full_epochs, workers=a.workers, note=a.note)
        print(json.dumps({k: s[k] for k in ("figures", "val", "test", "seconds")}, indent=1))
        return  # a candidate writes its own folder only; calibration.png is the calibration_summary stage's
    print(f"wrote {plot()}")


if __name__ == "__main__":
    main()
