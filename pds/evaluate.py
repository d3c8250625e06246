"""Train student vision-language models on a distilled (or coreset) training set and measure image-text
retrieval on the real test split: notebook 05_evaluate (its caption features come from `pds.text_features`).

Two protocols (DESIGN §2, mission_anchors §1.3 and §2), every method under both:
- `field` (MTT-VL / LoRS, the field's): trainable image encoder, frozen BERT-family text encoder (MiniLM on the
  toy world), trainable text projection head into the image-feature space; SGD, lr x0.1 at half-time.
- `paper` (the evaluation released with PDS): the image encoder is frozen at its pretrained weights (eval
  mode) and its output is the image embedding; the text side is the frozen CLIP text encoder of the embed
  stage followed by the trainable head, the only thing trained (SGD lr 0.2); PDS's text target is the CLIP
  text prototype itself.
Both: cosine logits / 0.07, symmetric InfoNCE, SGD momentum 0.9, weight decay 5e-4, recall@1/5/10 both ways.
The epoch is chosen on the val split; the test-selected figure the papers report is kept alongside.
"""

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pds import data, trainsets
from pds.contrastive import PairSet, RetrievalSet, frozen_embeddings, train_student
from pds.trainsets import TEXT_TARGETS

# pds_real: an ablation, not a baseline; random_kept / random_avg / random_nbr: the controls (`select_pairs`)
METHODS = ("pds", "random", "herding", "kcenter", "full", "pds_real", "random_kept", "random_avg", "random_nbr")
PROTOCOLS = ("field", "paper")


def _names(kind: str, names: Sequence[str], known: Sequence[str], key: str) -> None:
    if isinstance(names, str):  # a comma-separated string, as notebook 05 takes it
        names = [n for n in names.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"unknown or no {kind} {unknown or list(names)}; choose from {', '.join(known)} ({key}).")
    if len(set(names)) != len(names):
        raise ValueError(f"{kind} {list(names)} name one twice; list each once ({key}).")


def check_methods(methods: Sequence[str]) -> None:
    """Every method name known (evaluate.methods)."""
    _names("methods", methods, METHODS, "evaluate.methods")


def check_protocols(protocols: Sequence[str]) -> None:
    """Every protocol name known (evaluate.protocol)."""
    _names("protocols", protocols, PROTOCOLS, "evaluate.protocol")


def check_text_target(text_target: str) -> None:
    if text_target not in TEXT_TARGETS:
        raise ValueError(f"unknown text_target {text_target!r}; use one of {TEXT_TARGETS} (evaluate.text_target).")


def check_image_encoders(names: Sequence[str], pretrained: str = "toy", folder=None) -> None:
    """Every image encoder name known (a toy student or a timm model) and, for toy encoders with
    pretrained='toy', its weights in `folder`: checked for the whole list before the first student trains."""
    from pds import models, paths

    if isinstance(names, str):
        names = [n for n in names.split(",") if n]
    known = (*models.TOY_IMAGE_ENCODERS, *models.TIMM_IMAGE_ENCODERS)
    unknown = [n for n in names if n not in known]
    if unknown:
        import timm

        unknown = [n for n in unknown if not timm.is_model(n)]
    if unknown or not names:
        raise ValueError(f"unknown or no image encoders {unknown or list(names)}; choose toy encoders "
                         f"({', '.join(models.TOY_IMAGE_ENCODERS)}) or timm models "
                         f"({', '.join(models.TIMM_IMAGE_ENCODERS)}, ...) (evaluate.image_encoders).")
    if len(set(names)) != len(names):
        raise ValueError(f"image encoders {list(names)} name one twice; list each once (evaluate.image_encoders).")
    if pretrained == "toy":
        folder = paths.resolve(folder or models.TOY_ENCODER_DIR)
        for name in names:
            if name in models.TOY_IMAGE_ENCODERS and not (folder / name / "model.safetensors").is_file():
                raise FileNotFoundError(f"{folder / name / 'model.safetensors'} not found: the toy encoder {name!r} "
                                        "is not pretrained there; check encoders_dir, or run the toymodels stage.")


# the smallest value of each training setting (lr_image 0 freezes the image encoder; full_seeds 0: every seed)
_MINIMA = {"epochs": 1, "full_epochs": 1, "batch_size": 1, "eval_every": 1, "paper_epochs": 1, "paper_lr_step": 0,
           "full_seeds": 0, "lr_image": 0, "seeds": 1, "n_pairs": 1}


def check_values(values) -> None:
    """The numeric evaluate settings present in `values` (SETTINGS keys, seeds, n_pairs) are in range: counts
    whole and at least their minimum, learning rates finite and > 0 (lr_image >= 0), full_one_per_image 0 or 1."""
    for key, value in values.items():
        where = f"{key}={value!r} (evaluate.{key})"
        if key == "full_one_per_image":
            if value not in (0, 1):
                raise ValueError(f"{where} must be 0 or 1.")
        elif key in ("lr", "paper_lr", "lr_image"):
            low = _MINIMA.get(key)
            if (isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value)
                    or (value < low if low is not None else value <= 0)):
                raise ValueError(f"{where} must be a finite number {'>= 0' if low is not None else '> 0'}.")
        elif key in _MINIMA:
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < _MINIMA[key]:
                raise ValueError(f"{where} must be a whole number >= {_MINIMA[key]}.")


def check_settings(methods: Sequence[str], image_encoders: Sequence[str], protocols: Sequence[str],
                   text_target: str = "prototype", pretrained: str = "toy", encoders_dir=None,
                   values=None) -> None:
    """Every name list of an evaluation, and the numeric settings in `values`, at once, before any data is
    loaded (notebook 05 calls this first)."""
    check_methods(methods)
    check_protocols(protocols)
    check_text_target(text_target)
    check_values(values or {})
    check_image_encoders(image_encoders, pretrained, encoders_dir)


def num_threads(default: int = 2) -> int:
    """torch CPU threads from `PDS_NUM_THREADS` (speed only, so not a param)."""
    return int(os.environ.get("PDS_NUM_THREADS", default))


def default_workers(device: str) -> int:
    """Student-training processes: on the CPU one single-threaded process per thread of `PDS_NUM_THREADS`
    (small students use one core each far better than two); on a GPU one."""
    return max(1, num_threads()) if str(device) == "cpu" else 1


# ----------------------------------------------------------------------------------------------------
# retrieval metrics


# ----------------------------------------------------------------------------------------------------
# the student


# ----------------------------------------------------------------------------------------------------
# data held in memory


def load_images(root, rel_paths: Sequence[str], image_size: int, progress: bool = False) -> torch.Tensor:
    """Read images as a uint8 (n, 3, image_size, image_size) tensor (bicubic resize when the size differs,
    as the field's test transform)."""
    out = torch.empty((len(rel_paths), 3, image_size, image_size), dtype=torch.uint8)
    for i, rel in enumerate(tqdm(rel_paths, desc="images", unit="img", disable=not progress, leave=False)):
        im = data.load_image(root, rel)
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), resample=3)  # PIL.Image.BICUBIC
        out[i] = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
    return out


def retrieval_set(images: pd.DataFrame, captions: pd.DataFrame, text_features: np.ndarray, split: str,
                  pixels: torch.Tensor) -> RetrievalSet:
    """The `split` rows of the images / captions tables as a RetrievalSet; `pixels` (n_split_images, 3, S, S)
    are the split's images in table order, text_features (n_captions, d_t) are indexed by caption_id."""
    img = images[images["split"] == split]
    cap = captions[captions["split"] == split]
    if len(img) == 0 or len(cap) == 0:
        raise ValueError(f"the {split} split has {len(img)} images and {len(cap)} captions; it needs both.")
    if len(pixels) != len(img):
        raise ValueError(f"got {len(pixels)} {split} images for {len(img)} rows of the images table.")
    row = pd.Series(np.arange(len(img)), index=img["image_id"].to_numpy())
    missing = ~cap["image_id"].isin(row.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} {split} captions (e.g. caption_id "
                         f"{int(cap['caption_id'][missing].iloc[0])}) point to images that are not in the {split} "
                         "split of the images table; the embeddings tables are inconsistent (re-run embed).")
    txt2img = row.loc[cap["image_id"].to_numpy()].to_numpy(np.int64)
    return RetrievalSet(pixels, np.asarray(text_features[cap["caption_id"].to_numpy()], np.float32), txt2img)


# ----------------------------------------------------------------------------------------------------
# training sets at the budget


def with_text(ev: "EvaluationData", text_features: np.ndarray, pds_text: np.ndarray | None) -> "EvaluationData":
    """The same images with another text space: caption features (n_captions, d_t), rows = caption_id, for the
    val / test splits and coresets, and PDS's targets pds_text (M, d_t) -- e.g. the CLIP text side of the
    paper's protocol."""
    if len(text_features) != len(ev.captions):
        raise ValueError(f"{len(text_features)} caption features for {len(ev.captions)} captions.")
    split_text = {}
    for name in ("val", "test"):
        ids = ev.captions.loc[ev.captions["split"] == name, "caption_id"].to_numpy()  # the order of retrieval_set
        split_text[name] = replace(getattr(ev, name), text=np.asarray(text_features[ids], np.float32))
    return replace(ev, text_features=text_features, pds_text=pds_text, **split_text)


def check_budget(n_pairs: int, prototypes_dir) -> None:
    """Refuse to compare PDS and the coresets at different budgets: the prototypes must come from
    n_clusters = n_pairs (prototypes_dir/summary.json of the match stage)."""
    summary = data.load_json(Path(prototypes_dir) / "summary.json")
    if int(summary["n_clusters"]) != int(n_pairs):
        raise ValueError(f"the prototypes in {prototypes_dir} were made with M = {summary['n_clusters']} clusters but "
                         f"n_pairs = {n_pairs}: PDS and the coresets would be compared at different budgets; set "
                         "n_pairs to M, or re-run cluster and match with n_clusters = n_pairs (base.n_pairs, dvc repro).")


# ----------------------------------------------------------------------------------------------------
# training and evaluating one student


# ----------------------------------------------------------------------------------------------------
# the whole comparison


@dataclass
class EvaluationData:
    """Everything a run needs, loaded once: real images at one resolution, caption features, tables."""

    train_images: torch.Tensor  # (n_train_images, 3, S, S) uint8, rows in train-table order
    train_row: pd.Series  # image_id -> row of train_images
    val: RetrievalSet
    test: RetrievalSet
    synthetic: torch.Tensor | None  # (M, 3, S, S) uint8 distilled images
    pds_text: np.ndarray | None  # (M, d_t) their text targets
    pds_real: np.ndarray | None  # (M,) image_id of the real image nearest each image prototype (ablation)
    text_features: np.ndarray  # (n_captions, d_t) caption features, rows = caption_id
    captions: pd.DataFrame
    synthetic_similarity: np.ndarray | None = None  # (M, M) soft targets of the synthetic pairs (LoRS's sets)


def load_evaluation_data(dataset_root, images: pd.DataFrame, captions: pd.DataFrame,
                         text_features: np.ndarray, image_size: int, synthetic_dir=None,
                         synthetic: pd.DataFrame | None = None, pds_text: np.ndarray | None = None,
                         pds_real: np.ndarray | None = None,
                         progress: bool = True) -> EvaluationData:
    """Load the real train / val / test images (and the synthetic ones, `synthetic` table: file, caption,
    prototype) at `image_size`; text features (n_captions, d_t) rows = caption_id."""
    if len(text_features) != len(captions):
        raise ValueError(f"{len(text_features)} caption features for {len(captions)} captions; re-run text_features.")
    split_pixels = {}
    for split in ("train", "val", "test"):
        rows = images[images["split"] == split]
        split_pixels[split] = load_images(dataset_root, rows["path"].tolist(), image_size, progress)
    train_img = images[images["split"] == "train"]
    syn = None
    if synthetic is not None:
        if len(synthetic) == 0:
            raise ValueError("the synthetic table is empty: the distilled training set has no pairs.")
        if pds_text is None or len(pds_text) != len(synthetic):
            raise ValueError("pds_text must give one text target per synthetic image (pds_text_targets).")
        syn = load_images(synthetic_dir, synthetic["file"].tolist(), image_size, progress)
    return EvaluationData(
        train_images=split_pixels["train"],
        train_row=pd.Series(np.arange(len(train_img)), index=train_img["image_id"].to_numpy()),
        val=retrieval_set(images, captions, text_features, "val", split_pixels["val"]),
        test=retrieval_set(images, captions, text_features, "test", split_pixels["test"]),
        synthetic=syn, pds_text=pds_text, pds_real=pds_real, text_features=text_features, captions=captions)


def pair_set(ev: EvaluationData, caption_ids: np.ndarray) -> PairSet:
    """Real training pairs by caption id: their images and their captions' features."""
    caption_ids = np.asarray(caption_ids, dtype=np.int64)
    image_ids = ev.captions["image_id"].to_numpy()[caption_ids]
    missing = ~np.isin(image_ids, ev.train_row.index.to_numpy())
    if missing.any():
        raise ValueError(f"caption {int(caption_ids[missing][0])} is not a train-split pair (its image is not "
                         "a train image); coresets must come from the train split.")
    # np.array copies: pandas' copy-on-write hands out read-only arrays, which torch warns about when it indexes
    return PairSet(ev.train_images, np.array(ev.train_row.loc[image_ids], dtype=np.int64), ev.text_features[caption_ids])


@dataclass
class TrainSettings:
    """How every student is trained (see `train_student`); `full_*` apply to the full-data upper bound.

    protocol `field`: the image encoder trains with `lr_image`; `paper`: it is frozen and its embeddings are
    computed once per encoder (`frozen_embedding_data`), only the text head trains."""

    epochs: int
    full_epochs: int
    lr: float
    lr_image: float
    batch_size: int
    eval_every: int
    full_one_per_image: bool = True
    device: str = "cpu"
    eval_batch_size: int = 100  # speed only: small CPU batches stay in cache (1.5x faster than 500 on 1 thread)
    protocol: str = "field"
    lr_step: int = 0  # lr x0.1 for the epochs after this one; 0: half-time
    full_eval_every: int = 1
    full_seeds: int = 0  # the full-data bound trains for the first full_seeds seeds only; 0: every seed
    channels_last: bool = True  # speed only (see `Student`); False: the layout of the code before (benchmarks)

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; use one of {', '.join(PROTOCOLS)} (evaluate.protocol).")
        if self.full_seeds < 0:
            raise ValueError(f"full_seeds={self.full_seeds} must be >= 0 (0: every seed; evaluate.full_seeds).")


# the evaluate settings that shape training: params.yaml `evaluate:` keys and notebook 05's parameters alike
SETTINGS = ("epochs", "full_epochs", "lr", "lr_image", "batch_size", "eval_every", "full_one_per_image", "full_seeds",
            "paper_lr", "paper_epochs", "paper_lr_step")


def protocol_settings(protocols: Sequence[str], values, device: str = "cpu",
                      eval_batch_size: int = 100) -> dict[str, TrainSettings]:
    """The TrainSettings of each protocol from the evaluate settings `values` (a mapping holding the keys of
    SETTINGS; others are ignored), so the evaluate and tm_evaluate stages train alike: the field's protocol with
    `lr` / `lr_image`, `epochs` (the full-data bound `full_epochs`, evaluated after each); the paper's with the
    head alone (`paper_lr`, image encoder frozen), `paper_epochs` for every method, lr x0.1 after
    `paper_lr_step`, the full-data bound evaluated every `eval_every` epochs like the rest."""
    missing = [k for k in SETTINGS if k not in values]
    if missing:
        raise ValueError(f"the evaluate settings lack {', '.join(missing)} (params.yaml evaluate:).")
    check_values({k: values[k] for k in SETTINGS})
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise ValueError(f"unknown or no protocols {unknown or list(protocols)}; use {', '.join(PROTOCOLS)} "
                         "(evaluate.protocol).")
    v = {k: values[k] for k in SETTINGS}
    common = {"batch_size": int(v["batch_size"]), "eval_every": int(v["eval_every"]), "device": device,
              "full_one_per_image": bool(v["full_one_per_image"]), "eval_batch_size": eval_batch_size,
              "full_seeds": int(v["full_seeds"])}
    field = TrainSettings(int(v["epochs"]), int(v["full_epochs"]), float(v["lr"]), float(v["lr_image"]), **common)
    paper = TrainSettings(int(v["paper_epochs"]), int(v["paper_epochs"]), float(v["paper_lr"]), 0.0, protocol="paper",
                          lr_step=int(v["paper_lr_step"]), full_eval_every=int(v["eval_every"]), **common)
    return {p: {"field": field, "paper": paper}[p] for p in protocols}


def frozen_embedding_data(ev: EvaluationData, encoder, batch_size: int = 500) -> EvaluationData:
    """`ev` with every image (train, val, test, synthetic) replaced by its embedding (n, D) under the frozen
    encoder (`frozen_embeddings`): computed once per encoder, shared by every student of the paper's protocol."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the students: results do not depend on the thread count
    try:
        def emb(pixels):
            return None if pixels is None else frozen_embeddings(encoder, pixels, batch_size)

        return replace(ev, train_images=emb(ev.train_images), synthetic=emb(ev.synthetic),
                       val=replace(ev.val, images=emb(ev.val.images)), test=replace(ev.test, images=emb(ev.test.images)))
    finally:
        torch.set_num_threads(threads)


def run_student(ev: EvaluationData, load_encoder: Callable[[str], object], settings: TrainSettings, method: str,
                encoder_name: str, seed: int, caption_ids: np.ndarray | None,
                text: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Train and evaluate one student: `pds` on the synthetic pairs, any other method on the real pairs
    `caption_ids`, with their captions' features as text targets or `text` (M, d_t) (the averaged targets of
    the controls). Under the paper's protocol `ev` holds `encoder_name`'s frozen embeddings
    (`frozen_embedding_data`) and only a text head is trained. Returns (history with run columns, test top-5
    at the val-selected epoch)."""
    if method == "pds":
        train = PairSet(ev.synthetic, np.arange(len(ev.synthetic), dtype=np.int64), ev.pds_text,
                        ev.synthetic_similarity)
    elif method == "pds_real":
        train = PairSet(ev.train_images, ev.train_row.loc[ev.pds_real].to_numpy(np.int64), ev.pds_text)
    else:
        train = pair_set(ev, caption_ids)
        if text is not None:
            train = replace(train, text=np.asarray(text, np.float32))
    full = method == "full"
    epochs, every = (settings.full_epochs, settings.full_eval_every) if full else (settings.epochs, settings.eval_every)
    torch.manual_seed(seed)  # random-init encoders differ by seed
    encoder = None
    if settings.protocol == "field":
        encoder = load_encoder(encoder_name)
        if encoder.image_size != ev.train_images.shape[-1]:
            raise ValueError(f"encoder {encoder_name} expects {encoder.image_size}px images but the data were "
                             f"loaded at {ev.train_images.shape[-1]}px; evaluate encoders of one input size together.")
    start = time.perf_counter()
    result = train_student(encoder, train, ev.val, ev.test, epochs, settings.lr, settings.lr_image,
                           settings.batch_size, every, seed, device=settings.device,
                           eval_batch_size=settings.eval_batch_size, one_per_image=full and settings.full_one_per_image,
                           lr_step=0 if full else settings.lr_step, channels_last=settings.channels_last)
    hist = result.history
    n_train = len(np.unique(train.image_index)) if full and settings.full_one_per_image else len(train)
    for i, (col, value) in enumerate((("protocol", settings.protocol), ("method", method),
                                      ("image_encoder", encoder_name), ("seed", seed), ("n_train", n_train),
                                      ("epochs", epochs))):
        hist.insert(i, col, value)
    hist["seconds"] = round(time.perf_counter() - start, 1)
    return hist, result.test_top


_WORKER: dict = {}  # per worker process: the data and settings, sent once


def _init_worker(data_for, load_encoder, settings) -> None:
    torch.set_num_threads(1)
    _WORKER.update(data_for=data_for, load_encoder=load_encoder, settings=settings)


def _worker_run(task):
    return run_student(_WORKER["data_for"][task[1]], _WORKER["load_encoder"], _WORKER["settings"], *task)


def run_evaluation(ev: EvaluationData, methods: Sequence[str], encoder_names: Sequence[str],
                   load_encoder: Callable[[str], object], clip_image: np.ndarray, clip_text: np.ndarray,
                   n_pairs: int, seeds: Sequence[int], settings: TrainSettings, workers: int = 1,
                   progress: bool = True, keep: np.ndarray | None = None,
                   n_neighbours: int = 0) -> tuple[pd.DataFrame, dict]:
    """Train and evaluate one student per (method, image encoder, seed) under `settings.protocol`.

    Methods: `pds` (ev.synthetic with ev.pds_text), `pds_real` (the ablation: ev.pds_real real images
    with ev.pds_text), `random` / `herding` / `kcenter` (n_pairs real pairs
    chosen on the CLIP embeddings clip_image (n_images, d), clip_text (n_captions, d)), `full` (every
    training pair; `settings.full_epochs` epochs), the controls `random_kept` / `random_avg` / `random_nbr`
    (n_pairs pairs of the noise filter's pool `keep`, see `select_pairs`; `random_nbr` averages n_neighbours
    pairs, `control_members`). The text side is ev's (`with_text` swaps it): the controls' averaged targets are
    means of ev.text_features rows, the student's caption features (field) or CLIP's (paper), as PDS's.
    `load_encoder(name)` returns a fresh `pds.models.ImageEncoder`; under the field's protocol it is called
    under each run's seed (and must be picklable when workers > 1), under the paper's once per encoder.

    On the CPU every student trains single-threaded, so results do not depend on `workers`: with
    workers > 1 the students are spread over that many processes (spawned; the data are sent once each).

    Returns (runs, tops): runs has one row per (protocol, method, image_encoder, seed, epoch, split) with
    n_train, epochs, seconds, loss and the metrics; tops maps (protocol, method, encoder, seed) to the test
    top-5 images of each caption (n_txt, 5) at the val-selected epoch.
    """
    check_methods(methods)
    if "pds" in methods and ev.synthetic is None:
        raise ValueError("method pds needs the synthetic images: pass synthetic and pds_text to load_evaluation_data.")
    if "pds_real" in methods and (ev.pds_real is None or ev.pds_text is None):
        raise ValueError("method pds_real needs pds_real (nearest_real_images) and pds_text in load_evaluation_data.")
    if not encoder_names or not seeds:
        raise ValueError("give at least one image encoder and one seed.")
    selections = {(m, s): None if m.startswith("pds") else trainsets.select_pairs(m, ev.captions, clip_image, clip_text, n_pairs, s,
                                                                         keep)
                  for m in methods for s in seeds}
    targets = {}  # (method, seed) -> (n_pairs, d_t) averaged text targets of the controls that have them
    for (m, s), ids in selections.items():
        if m in ("random_avg", "random_nbr"):
            members = trainsets.control_members(m, ev.captions, clip_image, keep, ids, n_neighbours)
            targets[(m, s)] = (trainsets.pds_text_targets(members, ids, ev.text_features)[0],)
    # the full-data bound is the costliest student by far (every pair, many epochs) and varies least over seeds
    full_seeds = seeds[:settings.full_seeds] if settings.full_seeds else seeds
    plan = [(m, e, s, selections[(m, s)], *targets.get((m, s), ())) for e in encoder_names for m in methods
            for s in (full_seeds if m == "full" else seeds)]
    if settings.protocol == "paper":
        data_for = {}
        for e in encoder_names:
            torch.manual_seed(seeds[0])  # only a randomly initialised encoder depends on it
            data_for[e] = frozen_embedding_data(ev, load_encoder(e), settings.eval_batch_size)
    else:
        data_for = dict.fromkeys(encoder_names, ev)  # one object: pickled once for the workers
    results = {}
    bar = tqdm(total=len(plan), desc=f"students ({settings.protocol})", unit="run", disable=not progress)
    if workers <= 1:
        for task in plan:
            results[task[:3]] = run_student(data_for[task[1]], load_encoder, settings, *task)
            bar.update()
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: forking a process whose torch thread pools already ran can deadlock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(data_for, load_encoder, settings)) as pool:
            futures = {pool.submit(_worker_run, task): task[:3] for task in plan}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update()
    bar.close()
    runs = pd.concat([results[t[:3]][0] for t in plan], ignore_index=True)
    return runs, {(settings.protocol, *t[:3]): results[t[:3]][1] for t in plan}


def retrieval_examples(split: RetrievalSet, texts: Sequence[str], top: np.ndarray, n: int = 4,
                       seed: int = 0) -> tuple[list[str], list[list[np.ndarray]], list[int]]:
    """`n` random captions of a split with their top-k retrieved images ((H, W, 3) uint8) and the rank of
    the true image among them (-1: not in the top k), for `pds.plots.retrieval_examples`."""
    if len(texts) != len(split.txt2img) or len(top) != len(texts):
        raise ValueError("texts and top must have one row per caption of the split.")
    pick = np.sort(np.random.default_rng(seed).choice(len(texts), size=min(n, len(texts)), replace=False))
    queries, ranked, truth = [], [], []
    for q in pick:
        queries.append(str(texts[q]))
        ranked.append([split.images[i].permute(1, 2, 0).numpy() for i in top[q]])
        hits = np.flatnonzero(top[q] == split.txt2img[q])
        truth.append(int(hits[0]) if len(hits) else -1)
    return queries, ranked, truth
