"""Section `students`: student throughput of the evaluate stage, today's code against the earlier code,
measured side by side in one child process per image encoder (one thread, as the stage trains each student).

- field protocol: one student (M = 100 random real pairs, the stage's settings) trained three ways, in a
  rotating order: the earlier code (evaluation batch 500 images, contiguous NCHW layout), with today's
  evaluation batch (100: small CPU batches stay in cache) and today's code (batch 100 and channels-last
  layout); results are equal within float rounding (the r_mean of each run is recorded);
- the kernel pin: today's field student once more in a child without the AVX2 / Haswell pin that `make`
  exports (docs/reproducibility.md), i.e. what the pin costs or saves on this CPU;
- vmap (suggested as a speed-up; measured and not adopted): 3 students' forward + backward on one batch each,
  one after the other against `torch.func.vmap` over their stacked parameters;
- paper protocol: the frozen encoder embeds every image once (`frozen_embedding_data`), then students train a
  text head only; students per second include that embedding, amortised over the stage's students per encoder
  (methods x seeds), against a field-protocol student of today's code;
- captions: how many of the captions are distinct (each distinct caption is encoded once) and the text_features
  stage's captions per second on a sample.
"""

import sys
import time

from benchmarks.common import fmt, log, ratio_stats, run_child, stats

# field-protocol configurations: (evaluation batch, channels-last layout)
CONFIGS = {"before": (500, False), "eval batch 100": (100, False), "today": (100, True)}
PIN = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE")  # exported by make on x86-64


def child(spec: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from benchmarks.evaluate import settings_from_params
    from pds import data, evaluate, models, paths, trainsets

    s, _ = settings_from_params()
    if spec.get("quick"):
        s |= {"epochs": 4, "eval_every": 2}
    enc_name, repeats = spec["encoder"], spec["repeats"]
    configs = spec.get("configs", list(CONFIGS))
    emb = paths.resolve("data/embeddings")
    images, captions = data.load_table(emb / "images.parquet"), data.load_table(emb / "captions.parquet")
    clip_image, clip_text = data.load_npy(emb / "image.npy"), data.load_npy(emb / "text.npy")
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((len(captions), 384), dtype=np.float32)  # MiniLM's size; values do not change time

    def load_encoder(name):
        return models.load_image_encoder(name, "toy", "models/toyworld/toy-encoders")

    size = load_encoder(enc_name).image_size
    ev = evaluate.load_evaluation_data(paths.resolve("data/raw/toyworld"), images, captions, feats, size, progress=False)
    ids = trainsets.select_pairs("random", captions, clip_image, clip_text, s["n_pairs"], s["seed"])
    field = {name: evaluate.TrainSettings(s["epochs"], s["full_epochs"], s["lr"], s["lr_image"], s["batch_size"],
                                          s["eval_every"], eval_batch_size=CONFIGS[name][0],
                                          channels_last=CONFIGS[name][1]) for name in configs}
    out = {name: [] for name in configs} | {"r_mean": {}}
    for r in range(repeats):
        for name in configs[r % len(configs):] + configs[:r % len(configs)]:  # rotated: no config always first
            t = time.perf_counter()
            hist, _ = evaluate.run_student(ev, load_encoder, field[name], "random", enc_name, s["seed"], ids)
            out[name].append(time.perf_counter() - t)
            out["r_mean"][name] = float(hist["r_mean"].iloc[-1])
            print(f"    {enc_name} field, {name}: {out[name][-1]:.1f} s", file=sys.stderr)
    if spec.get("field_only"):
        return out
    paper = evaluate.TrainSettings(spec["paper_epochs"], spec["paper_epochs"], 0.2, 0.0, s["batch_size"],
                                   s["eval_every"], protocol="paper", lr_step=spec["paper_lr_step"])
    ev_text = evaluate.with_text(ev, clip_text, None)
    embed_s, paper_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        frozen = evaluate.frozen_embedding_data(ev_text, load_encoder(enc_name))
        embed_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        evaluate.run_student(frozen, load_encoder, paper, "random", enc_name, s["seed"], ids)
        paper_s.append(time.perf_counter() - t)
    out |= {"embed": embed_s, "paper": paper_s}
    return out


def vmap_child(spec: dict) -> dict:
    """Seconds for K students' forward + backward on one batch of 100 each: one after the other, and as one
    `torch.func.vmap` over their stacked parameters (grad of the same InfoNCE loss)."""
    import torch

    torch.set_num_threads(1)
    return {"encoders": {name: _vmap_times(name, spec["k"], spec["repeats"]) for name in spec["encoders"]}}


def _vmap_times(name: str, k: int, repeats: int) -> dict:
    import copy

    import torch
    from torch.func import functional_call, grad, stack_module_state, vmap

    from pds import contrastive, models

    students = []
    for i in range(k):
        torch.manual_seed(i)
        enc = models.load_image_encoder(name, "toy", "models/toyworld/toy-encoders")
        students.append(contrastive.Student(enc.model, contrastive.ProjectionHead(384, enc.num_features), enc.mean,
                                         enc.std).train())
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (k, 100, 3, 32, 32), dtype=torch.uint8, generator=gen)
    text = torch.randn(k, 100, 384, generator=gen)

    def one_by_one():
        for i, st in enumerate(students):
            contrastive.contrastive_loss(st(x[i], text[i])).backward()

    params, buffers = stack_module_state(students)
    base = copy.deepcopy(students[0]).to("meta")

    def loss(p, b, xi, ti):
        return contrastive.contrastive_loss(functional_call(base, (p, b), (xi, ti)))

    batched = vmap(grad(loss), randomness="different")
    times = {"one_by_one": [], "vmap": []}
    for fn, key in ((one_by_one, "one_by_one"), (lambda: batched(params, buffers, x, text), "vmap")):
        fn()  # warm-up
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    return times


def captions_child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from pds import data, models, paths, text_features

    captions = data.load_table(paths.resolve("data/embeddings/captions.parquet"))
    texts = captions["caption"].astype(str).tolist()
    encoder = models.load_text_encoder("minilm", device="cpu")
    sample = texts[: spec["n"]]
    times = []
    for _ in range(spec["repeats"]):
        t = time.perf_counter()
        text_features.encode_texts(encoder, sample, progress=False)
        times.append(time.perf_counter() - t)
    return {"n_captions": len(texts), "n_distinct": len(set(texts)), "sample": len(sample), "seconds": times}


def run(opts) -> dict:
    import yaml

    from benchmarks.common import ROOT
    from pds import paths

    if not (paths.resolve("data/embeddings") / "captions.parquet").is_file():
        return {"skipped": "data/embeddings is missing: run `dvc repro embed` first."}
    ev = yaml.safe_load((ROOT / "params.yaml").read_text())["evaluate"]
    encoders = ["convnet"] if opts.quick else [e for e in ev["image_encoders"].split(",") if e]
    repeats = 1 if opts.quick else 2
    per_encoder = len([m for m in ev["methods"].split(",") if m]) * int(ev["seeds"])
    import os

    pinned = {k: os.environ[k] for k in PIN if k in os.environ}
    rows = []
    for enc in encoders:
        r = run_child("students:child", {"encoder": enc, "repeats": repeats, "quick": opts.quick,
                                         "paper_epochs": 4 if opts.quick else ev["paper_epochs"],
                                         "paper_lr_step": ev["paper_lr_step"]}, 1)
        before, today = r["before"], r["today"]
        paper = [p + e / per_encoder for p, e in zip(r["paper"], r["embed"], strict=True)]
        row = {"encoder": enc, "field_s": {name: stats(r[name]) for name in CONFIGS},
               "speedup": ratio_stats(before, today),
               "r_mean": r["r_mean"], "embed_s": stats(r["embed"]), "paper_s": stats(paper),
               "paper_vs_field": ratio_stats(today, paper)}
        if pinned:  # today's student once more without the pin, in its own child
            u = run_child("students:child", {"encoder": enc, "repeats": repeats, "quick": opts.quick,
                                             "configs": ["today"], "field_only": True}, 1, {k: None for k in PIN})
            row["unpinned_s"] = stats(u["today"])
            row["unpinned_r_mean"] = u["r_mean"]["today"]
        rows.append(row)
        log(f"  {enc}: field {fmt(row['field_s']['before'])} -> {fmt(row['field_s']['today'])} s; "
            f"paper {fmt(row['paper_s'])} s")
    vm = run_child("students:vmap_child", {"k": 3, "encoders": ["convnet", "vit"] if not opts.quick else ["convnet"],
                                           "repeats": 3 if not opts.quick else 1}, 1)
    cap = run_child("students:captions_child", {"n": 500 if opts.quick else 4000, "repeats": repeats,
                                                "threads": opts.threads or 2}, opts.threads)
    return {"rows": rows, "students_per_encoder": per_encoder, "captions": cap, "repeats": repeats,
            "paper_epochs": ev["paper_epochs"], "pin": pinned,
            "vmap": {e: {"one_by_one_s": stats(t["one_by_one"]), "vmap_s": stats(t["vmap"]),
                         "speedup": ratio_stats(t["one_by_one"], t["vmap"])} for e, t in vm["encoders"].items()}}


def markdown(section: dict) -> str:
    if "skipped" in section:
        return f"*Students: skipped ({section['skipped']})*\n"
    if "field_s" not in section["rows"][0]:
        return "*Students: figures from an older harness; rerun `python benchmarks/run.py --only students`.*\n"
    lines = ["**Students** (one thread each, M = 100 random pairs, the stage's settings; "
             f"{section['repeats']} runs each, side by side, rotated): seconds per field-protocol student with the code "
             "the earlier code (evaluation batch 500, contiguous layout), with today's evaluation batch (100) alone, and "
             "today's (batch 100, channels-last); the paper protocol (its frozen-encoder embedding of every image "
             f"amortised over the {section['students_per_encoder']} students per encoder).", "",
             "| image encoder | before (s) | eval batch 100 (s) | today (s) | today / before speed | r_mean before / "
             "today | paper student (s) | paper / field speed |",
             "|---|---|---|---|---|---|---|---|"]
    for r in section["rows"]:
        f, rm = r["field_s"], r["r_mean"]
        lines.append(f"| {r['encoder']} | {fmt(f['before'])} | {fmt(f['eval batch 100'])} | {fmt(f['today'])} | "
                     f"{fmt(r['speedup'])} | {rm['before']:.2f} / {rm['today']:.2f} | {fmt(r['paper_s'])} | "
                     f"{fmt(r['paper_vs_field'])} |")
    if section.get("pin") and "unpinned_s" in section["rows"][0]:
        pin = ", ".join(f"{k}={v}" for k, v in section["pin"].items())
        cells = "; ".join(f"{r['encoder']} {fmt(r['field_s']['today'])} pinned vs {fmt(r['unpinned_s'])} unpinned "
                          f"(r_mean {r['r_mean']['today']:.2f} / {r['unpinned_r_mean']:.2f})" for r in section["rows"])
        lines.append(f"\nThe kernel pin ({pin}, exported by `make` for byte-identical results across x86-64 CPUs), "
                     f"today's field student, seconds: {cells}.")
    vm = section.get("vmap") or {}
    if vm:
        cells = "; ".join(f"{e} {fmt(v['one_by_one_s'])} s one by one vs {fmt(v['vmap_s'])} s with vmap "
                          f"(speed {fmt(v['speedup'])})" for e, v in vm.items())
        lines.append(f"\nvmap over 3 students (forward + backward, 100 pairs each; not adopted): {cells}. On the CPU "
                     "the students' convolutions and matrix products are already compute-bound at batch 100, so "
                     "batching them saves only Python overhead, which vmap's batching rules more than spend.")
    c = section["captions"]
    per_s = stats([c["sample"] / t for t in c["seconds"]])
    lines.append(f"\nCaptions: {c['n_distinct']:,} distinct of {c['n_captions']:,} ({c['n_distinct'] / c['n_captions']:.1%}), "
                 f"so encoding each distinct caption once saves {1 - c['n_distinct'] / c['n_captions']:.1%}; the "
                 f"text_features stage encodes {fmt(per_s)} captions/s (MiniLM, {c['sample']:,} captions).")
    return "\n".join(lines) + "\n"
