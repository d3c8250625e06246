"""Section `students`: student throughput of the evaluate stage, today's code against the previous one, measured
side by side in one child process per image encoder (one thread, as the stage trains each student).

- field protocol: one student (M = 100 random real pairs, the stage's settings) evaluated with the previous
  evaluation batch (500 images) and with today's (100: small CPU batches stay in cache); results are equal
  within float rounding (the r_mean of both runs is recorded);
- paper protocol: the frozen encoder embeds every image once (`frozen_embedding_data`), then students train a
  text head only; students per second include that embedding, amortised over the stage's students per encoder
  (methods x seeds), against a field-protocol student of today's code;
- captions: how many of the captions are distinct (each distinct caption is encoded once) and the text_features
  stage's captions per second on a sample.
"""

import sys
import time

from benchmarks.common import fmt, log, run_child, stats


def child(spec: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from benchmarks.evaluate import settings_from_params
    from pds import data, evaluate, models, paths

    s, _ = settings_from_params()
    if spec.get("quick"):
        s |= {"epochs": 4, "eval_every": 2}
    enc_name, repeats = spec["encoder"], spec["repeats"]
    emb = paths.resolve("data/embeddings")
    images, captions = data.load_table(emb / "images.parquet"), data.load_table(emb / "captions.parquet")
    clip_image, clip_text = data.load_npy(emb / "image.npy"), data.load_npy(emb / "text.npy")
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((len(captions), 384), dtype=np.float32)  # MiniLM's size; values do not change time

    def load_encoder(name):
        return models.load_image_encoder(name, "toy", "models/toyworld/toy-encoders")

    size = load_encoder(enc_name).image_size
    ev = evaluate.load_evaluation_data(paths.resolve("data/raw/toyworld"), images, captions, feats, size, progress=False)
    ids = evaluate.select_pairs("random", captions, clip_image, clip_text, s["n_pairs"], s["seed"])
    field = {}
    for batch in ("previous", "today"):
        field[batch] = evaluate.TrainSettings(s["epochs"], s["full_epochs"], s["lr"], s["lr_image"], s["batch_size"],
                                              s["eval_every"], eval_batch_size=500 if batch == "previous" else 100)
    out = {"previous": [], "today": [], "r_mean": {}}
    for r in range(repeats):
        for batch in (("previous", "today") if r % 2 == 0 else ("today", "previous")):
            t = time.perf_counter()
            hist, _ = evaluate.run_student(ev, load_encoder, field[batch], "random", enc_name, s["seed"], ids)
            out[batch].append(time.perf_counter() - t)
            out["r_mean"][batch] = float(hist["r_mean"].iloc[-1])
            print(f"    {enc_name} field, eval batch of the {batch} code: {out[batch][-1]:.1f} s", file=sys.stderr)
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
    rows = []
    for enc in encoders:
        r = run_child("students:child", {"encoder": enc, "repeats": repeats, "quick": opts.quick,
                                         "paper_epochs": 4 if opts.quick else ev["paper_epochs"],
                                         "paper_lr_step": ev["paper_lr_step"]}, 1)
        prev, today = r["previous"], r["today"]
        paper = [p + e / per_encoder for p, e in zip(r["paper"], r["embed"], strict=True)]
        rows.append({"encoder": enc, "previous_s": stats(prev), "today_s": stats(today),
                     "speedup": stats([a / b for a, b in zip(prev, today, strict=True)]),
                     "r_mean": r["r_mean"], "embed_s": stats(r["embed"]), "paper_s": stats(paper),
                     "paper_vs_field": stats([f / p for f, p in zip(today, paper, strict=True)])})
        log(f"  {enc}: field {fmt(rows[-1]['previous_s'])} -> {fmt(rows[-1]['today_s'])} s; paper {fmt(rows[-1]['paper_s'])} s")
    cap = run_child("students:captions_child", {"n": 500 if opts.quick else 4000, "repeats": repeats,
                                                "threads": opts.threads or 2}, opts.threads)
    return {"rows": rows, "students_per_encoder": per_encoder, "captions": cap, "repeats": repeats,
            "paper_epochs": ev["paper_epochs"]}


def markdown(section: dict) -> str:
    if "skipped" in section:
        return f"*Students: skipped ({section['skipped']})*\n"
    lines = ["**Students** (one thread each, M = 100 random pairs, the stage's settings; "
             f"{section['repeats']} runs each, side by side): seconds per student, field protocol with the previous "
             "evaluation batch (500 images) and today's (100), and the paper protocol (its frozen-encoder embedding "
             f"of every image amortised over the {section['students_per_encoder']} students per encoder).", "",
             "| image encoder | field, previous (s) | field, today (s) | today / previous speed | r_mean previous / today "
             "| embed once (s) | paper student (s) | paper / field speed |",
             "|---|---|---|---|---|---|---|---|"]
    for r in section["rows"]:
        rm = r["r_mean"]
        lines.append(f"| {r['encoder']} | {fmt(r['previous_s'])} | {fmt(r['today_s'])} | {fmt(r['speedup'])} | "
                     f"{rm['previous']:.2f} / {rm['today']:.2f} | {fmt(r['embed_s'])} | {fmt(r['paper_s'])} | "
                     f"{fmt(r['paper_vs_field'])} |")
    c = section["captions"]
    per_s = stats([c["sample"] / t for t in c["seconds"]])
    lines.append(f"\nCaptions: {c['n_distinct']:,} distinct of {c['n_captions']:,} ({c['n_distinct'] / c['n_captions']:.1%}), "
                 f"so encoding each distinct caption once saves {1 - c['n_distinct'] / c['n_captions']:.1%}; the "
                 f"text_features stage encodes {fmt(per_s)} captions/s (MiniLM, {c['sample']:,} captions).")
    return "\n".join(lines) + "\n"
