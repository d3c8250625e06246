"""Section `embed`: efficiency of the embed stage = its throughput (images/s, captions/s) divided by the
throughput of the bare CLIP forward on preloaded, preprocessed tensors at the same batch size and thread count.

One child process loads the CLIP once and then, in each of `--repeats` rounds, times in a rotated order
the stage's own functions (`pds.embed.embed_images` with 0 and 1 DataLoader workers, `embed_texts`), the bare forwards
(`encode_image` on a preprocessed (n, 3, S, S) tensor, `encode_text` on pre-tokenised ids) and the loading
path alone (the stage's functions with a model that does nothing), which says where the missing time goes.
Every timed call follows one untimed warm-up batch, so one-time kernel set-up counts for neither side.
"""

import sys
import time

from benchmarks.common import fmt, log, ratio_stats, run_child, stats, threads_text

IMAGE_CONFIGS = ("stage", "stage_workers1", "bare", "load")
TEXT_CONFIGS = ("stage", "bare", "load")


class _NullModel:
    """Stands in for the CLIP to time the loading path alone: returns a (B, 1) zero tensor."""

    def encode_image(self, x):
        return x.new_zeros((len(x), 1))

    def encode_text(self, ids):
        import torch

        return torch.zeros((len(ids), 1))


def child(spec: dict) -> dict:
    """`repeats` rounds, each timing every configuration once, in an order rotated by the round."""
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    from pds import data, embed, models, paths

    model, preprocess, tokenizer = models.load_clip(spec["clip_model"], spec["clip_pretrained"], device="cpu")
    root = paths.resolve(spec["dataset_root"])
    images, captions = data.load_dataset(root)
    n, n_text, bs = spec["n_images"], spec["n_captions"], spec["batch_size"]
    tbs = 4 * bs  # embed_dataset's caption batch size
    image_paths = [images.path[i % len(images)] for i in range(n)]
    texts = [captions.caption[i % len(captions)] for i in range(n_text)]

    # untimed: the preloaded inputs of the bare forwards, made as the stage makes them
    files = embed.ImageFiles(root, image_paths, preprocess)
    pixels = torch.stack([files[i] for i in range(n)])  # (n, 3, S, S) float
    ids = [tokenizer(texts[i:i + tbs]) for i in range(0, n_text, tbs)]
    null = _NullModel()

    def bare_images():
        with torch.inference_mode():
            out = [model.encode_image(pixels[i:i + bs]).float() for i in range(0, n, bs)]
        return torch.cat(out).numpy()

    def bare_texts():
        with torch.inference_mode():
            return torch.cat([model.encode_text(x).float() for x in ids]).numpy()

    image_fns = {
        "stage": lambda: embed.embed_images(model, preprocess, root, image_paths, bs, 0),
        "stage_workers1": lambda: embed.embed_images(model, preprocess, root, image_paths, bs, 1),
        "bare": bare_images,
        "load": lambda: embed.embed_images(null, preprocess, root, image_paths, bs, 0),
    }
    text_fns = {
        "stage": lambda: embed.embed_texts(model, tokenizer, texts, tbs),
        "bare": bare_texts,
        "load": lambda: embed.embed_texts(null, tokenizer, texts, tbs),
    }
    with torch.inference_mode():  # warm-up: one batch each way
        model.encode_image(pixels[:bs])
        model.encode_text(ids[0])
    rounds, checks = [], {}
    for rot in range(spec["repeats"]):
        out = {"image": {}, "text": {}}
        for kind, fns, count in (("image", image_fns, n), ("text", text_fns, n_text)):
            names = list(fns)
            names = names[rot % len(names):] + names[:rot % len(names)]
            for name in names:
                t = time.perf_counter()
                result = fns[name]()
                seconds = time.perf_counter() - t
                out[kind][name] = {"seconds": seconds, "per_second": count / seconds}
                if name.startswith("stage"):
                    checks[(kind, name)] = result
        rounds.append(out)
        print(f"    round {rot + 1}: images stage {out['image']['stage']['per_second']:.0f}/s, bare "
              f"{out['image']['bare']['per_second']:.0f}/s; captions stage {out['text']['stage']['per_second']:.0f}"
              f"/s, bare {out['text']['bare']['per_second']:.0f}/s", file=sys.stderr, flush=True)
    # the stage's output equals the bare forward's (same numbers, so the comparison is like for like)
    want = {"image": bare_images(), "text": bare_texts()}
    same = all(np.array_equal(got, want[kind]) for (kind, _), got in checks.items())
    return {"rounds": rounds, "torch_threads": torch.get_num_threads(), "stage_equals_bare": same}


# (label, open_clip name, pretrained, images per timed call as a fraction of --embed-images, image batch size;
# captions: 5x the images, 4x the batch as embed_dataset): the toy CLIP, and a randomly initialised ViT-B-32
# at 224x224, whose forward costs what a real CLIP's does (no download)
MODELS = (("toy CLIP (32x32)", "local-dir:models/toyworld/toy-clip", "none", 1.0, 256),
          ("ViT-B-32, random weights (224x224)", "ViT-B-32", "none", 1 / 16, 64))


def run(opts) -> dict:
    quick = opts.quick
    from pds import paths

    if not (paths.resolve("data/raw/toyworld") / "dataset_toyworld.json").is_file():
        return {"skipped": "data/raw/toyworld is missing: run `dvc repro toyworld` first."}
    if not (paths.resolve("models/toyworld/toy-clip") / "open_clip_config.json").is_file():
        return {"skipped": "models/toyworld/toy-clip is missing: run `dvc repro toymodels` first."}
    repeats = 2 if quick else opts.repeats
    out = {"models": [], "note": (
        "efficiency = stage throughput / bare forward throughput, per repeat (same process, same threads, same "
        "batch size, in each model's settings); `load` is the stage's loading path alone (model replaced by a "
        "no-op). Target >= 0.9.")}
    for label, name, pretrained, share, bs in MODELS:
        n = max(64, int((512 if quick else opts.embed_images) * share))
        spec = {"label": label, "clip_model": name, "clip_pretrained": pretrained,
                "dataset_root": "data/raw/toyworld", "n_images": n, "n_captions": 5 * n, "batch_size": bs,
                "threads": opts.threads}
        log(f"  {label}: {n} images, {5 * n} captions")
        child_out = run_child("embed:child", spec | {"repeats": repeats}, opts.threads)
        runs = child_out["rounds"]
        entry = {"settings": spec | {"repeats": repeats}, "results": {}}
        for kind, configs in (("image", IMAGE_CONFIGS), ("text", TEXT_CONFIGS)):
            res = {c: stats([r[kind][c]["per_second"] for r in runs]) for c in configs}
            bare = [r[kind]["bare"]["per_second"] for r in runs]
            for c in configs:
                if c.startswith("stage"):
                    res[f"efficiency_{c}"] = ratio_stats([r[kind][c]["per_second"] for r in runs], bare)
            entry["results"][kind] = res
            log(f"  {label} {kind}: efficiency {fmt(res['efficiency_stage'], 2)}")
        entry["stage_equals_bare"] = child_out["stage_equals_bare"]
        entry["peak_rss_mib"] = child_out["peak_rss_mib"]
        out["models"].append(entry)
    return out


def markdown(section: dict) -> str:
    if "skipped" in section:
        return f"*Embedding: skipped ({section['skipped']})*\n"
    first = section["models"][0]["settings"]
    lines = [f"**Embedding efficiency** (toy-world images and captions, {threads_text(first['threads'])}; median "
             f"(min–max) of per-round values over {first['repeats']} rounds)", "",
             "| CLIP | input | embed stage (/s) | bare CLIP forward (/s) | efficiency (target ≥ 0.9) | "
             "loading alone (/s) | serial prediction (/s) |", "|---|---|---|---|---|---|---|"]

    def serial(res):  # no overlap: 1 / (1 / bare + 1 / load), from the medians
        return f"{1 / (1 / res['bare']['median'] + 1 / res['load']['median']):,.0f}"

    same = []
    for entry in section["models"]:
        s, img, txt = entry["settings"], entry["results"]["image"], entry["results"]["text"]
        name = f"{s['label']}, {s['n_images']:,} images / {s['n_captions']:,} captions"
        lines.append(f"| {name} | images, 0 workers | {fmt(img['stage'])} | {fmt(img['bare'])} | "
                     f"{fmt(img['efficiency_stage'], 2)} | {fmt(img['load'])} | {serial(img)} |")
        lines.append(f"| | images, 1 worker | {fmt(img['stage_workers1'])} | {fmt(img['bare'])} | "
                     f"{fmt(img['efficiency_stage_workers1'], 2)} | — | — |")
        lines.append(f"| | captions | {fmt(txt['stage'])} | {fmt(txt['bare'])} | {fmt(txt['efficiency_stage'], 2)} | "
                     f"{fmt(txt['load'])} | {serial(txt)} |")
        same.append(f"{s['label']}: {'yes' if entry.get('stage_equals_bare') else 'NO'}")
    lines += ["", "Loading alone = the stage's own loading path (decode, path checks, preprocessing; tokenising for "
              "captions) with a no-op model. Without workers the stage runs loading and model one after the other, "
              "so its throughput is the serial prediction; a worker overlaps them only where a core is free. "
              "The toy CLIP's forward is so cheap (a 3-layer ViT on 16 patches) that loading a 32x32 PNG costs as "
              "much as embedding it, so its efficiency measures the PNG decoder; the random ViT-B-32 has a real "
              "CLIP's cost per image, which is the regime the 0.9 target is about. Stage embeddings bit-identical "
              "to the bare forward's: " + "; ".join(same) + "."]
    return "\n".join(lines) + "\n"
