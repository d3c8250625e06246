"""The tm_evaluate stage: students trained on the MTT-VL (`tm`) and LoRS (`lors`) sets of the tm stage, with
exactly the students, seeds, epoch selection and both protocols of the evaluate stage (`pds.evaluate`). It
writes their runs (results/tm_evaluate/runs.csv); the evaluate stage summarises them with its own, so the
`tm` and `lors` rows sit beside PDS's in one metrics.json and one cross-architecture table.

    python -m pds.tm_evaluate --tm-dir data/tm --out results/tm_evaluate

A distilled pair is (learned pixels, learned text embedding in the student's text space), as in MTT-VL / LoRS.
Under the paper's protocol the text side must be CLIP's: there each pair's text is the CLIP embedding of the
real training caption nearest its learned text (the same caption the set's table names). LoRS's students
train with its learned similarity as soft targets and its WBCE loss (LoRS `evaluate_synset_with_similarity`),
under both protocols: the similarity is part of the distilled set. MTT-VL's train with InfoNCE.
"""

import argparse
import functools
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pds import artifacts, config, data, evaluate, models, paths, results, text_features

METHODS = ("tm", "lors")


def load_set(folder, image_size: int, made_from=()) -> tuple[torch.Tensor, np.ndarray, pd.DataFrame, np.ndarray | None]:
    """A distilled set written by `python -m pds.tm distill`: images (M, 3, S, S) uint8, learned text (M, d_t),
    its table (file, caption, caption_id = the real training caption nearest each learned text,
    init_caption_id = the real pair it started from) and the learned similarity (M, M) (LoRS; None for MTT-VL).
    A folder that is not one finished run, or (`made_from`: the opened experts) not distilled from those
    experts, is refused."""
    folder = Path(folder)
    run = artifacts.open_artifact(folder, "tm", made_from)
    table = data.load_table(folder / "synthetic.parquet")
    text = data.load_npy(folder / "text.npy")
    if len(text) != len(table):
        raise ValueError(f"{folder}: {len(table)} images but {len(text)} text embeddings; re-run the tm stage.")
    sim_file = folder / "similarity.npy"
    similarity = data.load_npy(sim_file).astype(np.float32) if sim_file.name in run.files else None
    if similarity is not None and similarity.shape != (len(table), len(table)):
        raise ValueError(f"{sim_file}: shape {similarity.shape} for {len(table)} pairs; re-run the tm stage.")
    images = evaluate.load_images(folder, table["file"].tolist(), image_size)
    return images, text.astype(np.float32), table, similarity


def evaluate_sets(ev: evaluate.EvaluationData, sets: dict, clip_text: np.ndarray, student_text: np.ndarray,
                  encoder_names, load_encoder, seeds, settings: dict, workers: int = 1) -> pd.DataFrame:
    """One student per protocol x set x encoder x seed, trained by `pds.evaluate.run_evaluation` as the
    distilled set `pds` is, then labelled with the set's name. sets: name -> `load_set`'s (images, text,
    table, similarity or None)."""
    runs = []
    for protocol, s in settings.items():
        for name, (images, text, table, similarity) in sets.items():
            target = text if protocol == "field" else clip_text[table["caption_id"].to_numpy(np.int64)]
            space = student_text if protocol == "field" else clip_text
            ev_p = evaluate.with_text(ev, space, target)
            ev_p = replace(ev_p, synthetic=images, synthetic_similarity=similarity)
            r, _ = evaluate.run_evaluation(ev_p, ["pds"], encoder_names, load_encoder, None, None, len(images), seeds,
                                           s, workers, progress=paths.progress())
            runs.append(r.assign(method=name))
    return pd.concat(runs, ignore_index=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Students on the MTT-VL / LoRS sets, both protocols (the tm_evaluate stage).")
    p.add_argument("--tm-dir", default="data/tm")
    p.add_argument("--embeddings-dir", default="data/embeddings")
    p.add_argument("--text-features-dir", default="data/text_features")
    p.add_argument("--dataset-root", default="data/raw/toyworld")
    p.add_argument("--encoders-dir", default=models.TOY_ENCODER_DIR)
    p.add_argument("--params", default="params.yaml", help="the evaluate: section's settings are used")
    p.add_argument("--out", default="results/tm_evaluate")
    args = p.parse_args(argv)
    torch.set_num_threads(evaluate.num_threads())
    params = config.load(paths.resolve(args.params))
    e, base = params["evaluate"], params["base"]
    encoder_names = [n for n in e["image_encoders"].split(",") if n]
    evaluate.check_protocols([p for p in e["protocol"].split(",") if p])
    evaluate.check_image_encoders(encoder_names, e["pretrained"], args.encoders_dir)
    # the sets are the experts' run's, checked before anything heavy loads (load_set checks them again as it reads)
    experts = artifacts.open_artifact(paths.resolve(args.tm_dir) / "experts", "experts")
    for m in METHODS:
        artifacts.open_artifact(paths.resolve(args.tm_dir) / m, "tm", [experts])
    emb = paths.resolve(args.embeddings_dir)
    artifacts.open_artifact(emb, "embed", names=["images.parquet", "captions.parquet", "text.npy"])
    images, captions = data.load_table(emb / "images.parquet"), data.load_table(emb / "captions.parquet")
    clip_text = data.load_npy(emb / "text.npy")
    student_text = text_features.load_text_features(paths.resolve(args.text_features_dir), captions, e["text_encoder"])
    load_encoder = functools.partial(models.load_image_encoder, pretrained=e["pretrained"], folder=args.encoders_dir)
    size = load_encoder(encoder_names[0]).image_size
    ev = evaluate.load_evaluation_data(paths.resolve(args.dataset_root), images, captions, student_text, size,
                                       progress=paths.progress())
    sets = {m: load_set(paths.resolve(args.tm_dir) / m, size, [experts]) for m in METHODS}
    n_pairs = {len(s[0]) for s in sets.values()}
    if n_pairs != {int(base["n_pairs"])}:
        raise ValueError(f"the tm sets hold {sorted(n_pairs)} pairs but base.n_pairs = {base['n_pairs']}; re-run the tm stage.")
    device, eval_bs = paths.device(), paths.batch_size(100)
    settings = evaluate.protocol_settings([p for p in e["protocol"].split(",") if p], e, device, eval_bs)
    seeds = [int(base["seed"]) + i for i in range(int(e["seeds"]))]
    start = time.perf_counter()
    runs = evaluate_sets(ev, sets, clip_text, student_text, encoder_names, load_encoder, seeds, settings,
                         evaluate.default_workers(device))
    results.save_outputs(paths.resolve(args.out), runs)  # summarised by the evaluate stage, with PDS's runs
    print(f"wrote {args.out}: {runs.groupby(['protocol', 'method', 'image_encoder', 'seed']).ngroups} students in "
          f"{(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
