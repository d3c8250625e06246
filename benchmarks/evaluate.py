"""Section `evaluate`: wall time of one student training run (`pds.evaluate.run_student`: training plus the
val / test evaluations it makes) per image encoder and per method.

Source of the figures, in order of preference:
1. the evaluate stage's own per-run timings (the `seconds` column of results/evaluate/runs.csv: one run per
   method x encoder x seed, 3 seeds) from the `stages` section of the same harness run: the stage's
   settings, with its students trained as the stage trains them (one thread each, `PDS_NUM_THREADS` =
   --threads processes side by side). This costs nothing extra: those runs are the stage.
2. results/evaluate/runs.csv of this repository (the last `dvc repro`; its date is recorded);
3. a direct measurement (`--eval-measure` forces it): one child process per image encoder loads the
   evaluation data once and runs every method `--repeats` times, one at a time, in an order rotated by the
   round, with the stage's settings (params.yaml `evaluate:`, or the notebook's defaults while that section
   does not exist). It takes long (each run evaluates val and test 11 times): about 30-60 s per run.

In a direct measurement, inputs are the pipeline's artefacts when they exist (data/embeddings,
data/text_features, data/synthetic). Where one is missing a stand-in of the same shape is used and the result
names it: random unit-norm 384-d caption features (the MiniLM size), random 64-d CLIP embeddings, random
uint8 images for the M synthetic pairs. Training time depends on shapes and counts, not on these values.
"""

import sys
import time

from benchmarks.common import fmt, log, run_child, stats

DEFAULTS = {"epochs": 100, "full_epochs": 2, "full_one_per_image": 1, "lr": 0.1, "lr_image": 0.01,
            "batch_size": 128, "eval_every": 10, "seed": 42, "n_pairs": 100, "text_dim": 384}  # 05_evaluate.ipynb


def settings_from_params() -> tuple[dict, str]:
    import yaml

    from benchmarks.common import ROOT

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    ev = params.get("evaluate") or {}
    out = dict(DEFAULTS)
    for key in ("epochs", "full_epochs", "full_one_per_image", "lr", "lr_image", "batch_size", "eval_every"):
        if key in ev:
            out[key] = ev[key]
    out["seed"] = params.get("base", {}).get("seed", out["seed"])
    out["n_pairs"] = params.get("base", {}).get("n_pairs", out["n_pairs"])
    return out, "params.yaml evaluate:" if ev else "05_evaluate.ipynb defaults (params.yaml has no evaluate:)"


def child(spec: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from pds import data, evaluate, models, paths, trainsets
    from pds import text_features as text_features_module

    s = spec["settings"]
    rng = np.random.default_rng(0)
    stand_ins = []
    root = paths.resolve(spec["dataset_root"])
    emb_dir = paths.resolve("data/embeddings")
    if (emb_dir / "captions.parquet").is_file() and (emb_dir / "text.npy").is_file():
        images, captions = data.load_table(emb_dir / "images.parquet"), data.load_table(emb_dir / "captions.parquet")
        clip_image, clip_text = data.load_npy(emb_dir / "image.npy"), data.load_npy(emb_dir / "text.npy")
    else:
        images, captions = data.load_dataset(root)
        clip_image = rng.standard_normal((len(images), 64), dtype=np.float32)
        clip_text = rng.standard_normal((len(captions), 64), dtype=np.float32)
        stand_ins.append("CLIP embeddings (random 64-d)")
    try:
        text_features = text_features_module.load_text_features(paths.resolve("data/text_features"), captions)
    except (FileNotFoundError, ValueError, KeyError):
        text_features = rng.standard_normal((len(captions), s["text_dim"]), dtype=np.float32)
        text_features /= np.linalg.norm(text_features, axis=1, keepdims=True)
        stand_ins.append(f"caption features (random unit {s['text_dim']}-d)")

    def load_encoder(name):
        return models.load_image_encoder(name, "toy", "models/toyworld/toy-encoders")

    encoder = spec["encoder"]
    size = load_encoder(encoder).image_size
    t = time.perf_counter()
    ev = evaluate.load_evaluation_data(root, images, captions, text_features, size, progress=False)
    load_seconds = time.perf_counter() - t
    m = s["n_pairs"]
    syn_dir = paths.resolve("data/synthetic")
    if (syn_dir / "synthetic.parquet").is_file():
        table = data.load_table(syn_dir / "synthetic.parquet")
        ev.synthetic = evaluate.load_images(syn_dir, table["file"].tolist(), size)
    else:
        ev.synthetic = torch.from_numpy(rng.integers(0, 256, (m, 3, size, size), dtype=np.uint8))
        stand_ins.append(f"synthetic images (random uint8, M={m})")
    # text targets of the distilled pairs: their values do not change the training time
    ev.pds_text = text_features[rng.choice(len(text_features), len(ev.synthetic), replace=False)]
    settings = evaluate.TrainSettings(epochs=s["epochs"], full_epochs=s["full_epochs"], lr=s["lr"],
                                      lr_image=s["lr_image"], batch_size=s["batch_size"], eval_every=s["eval_every"],
                                      full_one_per_image=bool(s["full_one_per_image"]), device="cpu")
    methods = spec["methods"]
    out = {mth: {"select_seconds": [], "train_seconds": [], "n_train": None} for mth in methods}
    for rot in range(spec["repeats"]):
        for mth in methods[rot % len(methods):] + methods[:rot % len(methods)]:
            t = time.perf_counter()
            ids = None if mth == "pds" else trainsets.select_pairs(mth, captions, clip_image, clip_text, m, s["seed"])
            select = time.perf_counter() - t
            t = time.perf_counter()
            hist, _ = evaluate.run_student(ev, load_encoder, settings, mth, encoder, s["seed"], ids)
            train = time.perf_counter() - t
            out[mth]["select_seconds"].append(select)
            out[mth]["train_seconds"].append(train)
            out[mth]["n_train"] = int(hist["n_train"].iloc[0])
            out[mth]["epochs"] = int(hist["epochs"].iloc[0])
            print(f"    {encoder} {mth:<8} round {rot + 1}: train {train:6.1f} s (select {select:.2f} s)",
                  file=sys.stderr, flush=True)
    return {"methods": out, "load_seconds": load_seconds, "stand_ins": stand_ins, "image_size": size}


STAGE_RUNS = "results/benchmarks/evaluate_runs.csv"  # copied here by the stages section


def from_runs_csv(path, source: str, parallel: int | None) -> dict:
    """Per (encoder, method): stats over seeds of the evaluate stage's recorded run time."""
    import pandas as pd

    runs = pd.read_csv(path)
    need = {"method", "image_encoder", "seed", "seconds", "n_train", "epochs"}
    if not need <= set(runs.columns):
        raise ValueError(f"{path} lacks columns {sorted(need - set(runs.columns))}")
    first = runs.groupby(["image_encoder", "method", "seed"], sort=False).first().reset_index()
    encoders = list(dict.fromkeys(first["image_encoder"]))
    methods = list(dict.fromkeys(first["method"]))
    rows = []
    for (enc, mth), g in first.groupby(["image_encoder", "method"], sort=False):
        rows.append({"encoder": enc, "method": mth, "n_train": int(g["n_train"].iloc[0]),
                     "epochs": int(g["epochs"].iloc[0]), "train_seconds": stats(g["seconds"]),
                     "select_seconds": None})
    settings, params_source = settings_from_params()
    return {"source": source, "settings": settings | {"source": params_source, "encoders": encoders,
                                                     "methods": methods, "repeats": int(first.seed.nunique()),
                                                     "threads_per_student": 1, "students_in_parallel": parallel},
            "table": rows, "children": {}, "stand_ins": []}


def run(opts) -> dict:
    import datetime
    import os

    from benchmarks.common import ROOT

    stage_csv, repo_csv = ROOT / STAGE_RUNS, ROOT / "results" / "evaluate" / "runs.csv"
    if not opts.eval_measure:
        if stage_csv.is_file() and stage_csv.stat().st_mtime >= opts.started:
            return from_runs_csv(stage_csv, "the evaluate stage's own run times, from the stages section of this "
                                 "harness run", opts.threads)
        if repo_csv.is_file():
            date = datetime.datetime.fromtimestamp(repo_csv.stat().st_mtime, datetime.UTC).isoformat(timespec="minutes")
            return from_runs_csv(repo_csv, f"results/evaluate/runs.csv of the last dvc repro ({date}); its "
                                 "students ran as PDS_NUM_THREADS processes side by side",
                                 int(os.environ.get("PDS_NUM_THREADS", 2)))
        log("  no evaluate-stage run times found: measuring directly (slow; see benchmarks/evaluate.py)")
    return measure(opts)


def measure(opts) -> dict:
    settings, source = settings_from_params()
    encoders = [e for e in opts.eval_encoders.split(",") if e]
    methods = [m for m in opts.eval_methods.split(",") if m]
    repeats = opts.repeats
    if opts.quick:
        settings |= {"epochs": 2, "full_epochs": 1, "eval_every": 1}
        encoders, repeats = encoders[:1], 1
    from pds import paths

    if not (paths.resolve("data/raw/toyworld") / "dataset_toyworld.json").is_file():
        return {"skipped": "data/raw/toyworld is missing: run `dvc repro toyworld` first."}
    missing = [e for e in encoders if not (paths.resolve("models/toyworld/toy-encoders") / e / "model.safetensors").is_file()]
    if missing:
        return {"skipped": f"toy encoders {missing} missing under models/toyworld/toy-encoders: run the toymodels stage."}
    rows, children = [], {}
    for enc in encoders:
        r = run_child("evaluate:child", {"encoder": enc, "methods": methods, "repeats": repeats, "settings": settings,
                                         "dataset_root": "data/raw/toyworld"}, opts.threads)
        children[enc] = {k: r[k] for k in ("peak_rss_mib", "load_seconds", "stand_ins", "image_size")}
        for mth, v in r["methods"].items():
            rows.append({"encoder": enc, "method": mth, "n_train": v["n_train"], "epochs": v["epochs"],
                         "train_seconds": stats(v["train_seconds"]), "select_seconds": stats(v["select_seconds"])})
            log(f"  {enc:<8} {mth:<8} {fmt(rows[-1]['train_seconds'])} s")
    return {"source": "direct measurement, one student at a time" + (" (quick: 2 epochs)" if opts.quick else ""),
            "settings": settings | {"source": source, "encoders": encoders, "methods": methods, "repeats": repeats,
                                    "threads_per_student": 1, "students_in_parallel": 1},
            "table": rows, "children": children,
            "stand_ins": sorted({s for c in children.values() for s in c["stand_ins"]})}


def markdown(section: dict) -> str:
    if "skipped" in section:
        return f"*Evaluation: skipped ({section['skipped']})*\n"
    s = section["settings"]
    methods, children = s["methods"], section["children"]
    lines = [f"**Evaluation**: seconds per student run (training + val/test evaluation every {s['eval_every']} "
             f"epochs; {s['epochs']} epochs on the M = {s['n_pairs']} distilled / coreset pairs, {s['full_epochs']} "
             f"on the full data; settings from {s['source']}; 1 thread per student, "
             f"{s['students_in_parallel']} student(s) at a time). Source: {section['source']}.", "",
             "| image encoder | " + " | ".join(methods) + (" | peak memory (MiB) |" if children else " |"),
             "|---|" + "---|" * (len(methods) + bool(children))]
    for enc in s["encoders"]:
        cells = []
        for mth in methods:
            row = next((r for r in section["table"] if r["encoder"] == enc and r["method"] == mth), None)
            cells.append(fmt(row["train_seconds"]) if row else "—")
        peak = f" | {children[enc]['peak_rss_mib']:,.0f}" if children else ""
        lines.append(f"| {enc} | " + " | ".join(cells) + peak + " |")
    sel = {r["method"]: r["select_seconds"] for r in section["table"]
           if r["method"] in ("herding", "kcenter") and r.get("select_seconds")}
    if sel:
        lines.append("\nSelection on the CLIP embeddings (not included above): "
                     + ", ".join(f"{k} {fmt(v)} s" for k, v in sel.items()) + ".")
    if section["stand_ins"]:
        lines.append(f"\nStand-ins used (pipeline artefacts missing; same shapes): {'; '.join(section['stand_ins'])}.")
    return "\n".join(lines) + "\n"
