"""What each method trains on: the real pairs a coreset or control keeps (`select_pairs`, on the embed stage's
CLIP embeddings and the cluster stage's noise filter) and the text target of every pair -- PDS's averaged
intersection captions, a control's averaged captions, or one retrieved caption -- in either protocol's text space.
`pds.evaluate` trains the students on them."""

import numpy as np
import pandas as pd

from pds import baselines

CONTROLS = ("random_kept", "random_avg", "random_nbr")  # coresets of the noise filter's pool (cluster stage)
TEXT_TARGETS = ("prototype", "caption")


def train_pairs(captions: pd.DataFrame) -> pd.DataFrame:
    """The candidate training pairs: the train-split caption rows (one pair per caption, as the field)."""
    train = captions[captions["split"] == "train"]
    if len(train) == 0:
        raise ValueError("the captions table has no train-split rows; the training set would be empty.")
    return train


def select_pairs(method: str, captions: pd.DataFrame, clip_image: np.ndarray, clip_text: np.ndarray,
                 n_pairs: int, seed: int, keep: np.ndarray | None = None) -> np.ndarray:
    """Caption ids of the real training pairs a baseline keeps: `random`, `herding` or `kcenter` (on the
    embed stage's CLIP embeddings, see `pds.baselines`) with `n_pairs` pairs, or `full` (every pair).

    The controls draw from the pairs the noise filter keeps, the pool PDS clusters: keep (n_train,) bool over
    the training pairs in `train_pairs` order (the cluster stage's keep.npy). `random_kept`: `random` on that
    pool; `random_avg` and `random_nbr`: random kept pairs of distinct images (`baselines.select_random_images`;
    one selection for both, so per seed they differ only in their text targets, `control_members`).

    clip_image (n_images, d) rows = image_id, clip_text (n_captions, d) rows = caption_id.
    """
    train = train_pairs(captions)
    ids = train["caption_id"].to_numpy(np.int64)
    if method == "full":
        return ids
    if method in CONTROLS:
        kept = kept_positions(keep, len(ids))
        if method == "random_kept":
            return ids[kept[baselines.select_random(len(kept), n_pairs, seed)]]
        image_ids = train["image_id"].to_numpy(np.int64)[kept]
        return ids[kept[baselines.select_random_images(image_ids, n_pairs, seed)]]
    if method == "random":
        return ids[baselines.select_random(len(ids), n_pairs, seed)]
    if method in ("herding", "kcenter"):
        x = baselines.pair_features(clip_image[train["image_id"].to_numpy()], clip_text[ids])  # (n_train, 2d)
        pos = baselines.select_herding(x, n_pairs) if method == "herding" else baselines.select_kcenter(x, n_pairs, seed)
        return ids[pos]
    raise ValueError(f"unknown baseline {method!r}; use one of random, herding, kcenter, full, {', '.join(CONTROLS)}.")


def kept_positions(keep: np.ndarray | None, n_train: int) -> np.ndarray:
    """Positions (n_kept,) of the kept training pairs; keep (n_train,) bool in `train_pairs` order."""
    if keep is None:
        raise ValueError(f"the controls {', '.join(CONTROLS)} need the noise filter's keep mask (the cluster stage's "
                         "keep.npy, notebook 05's clusters_dir).")
    keep = np.asarray(keep)
    if keep.dtype != bool or keep.shape != (n_train,):
        raise ValueError(f"the keep mask must be a bool array with one entry per training pair ({n_train}), got "
                         f"{keep.dtype} {keep.shape}; re-run the cluster stage on the current embeddings.")
    return np.flatnonzero(keep)


def median_intersection_size(members: pd.DataFrame) -> int:
    """PDS's median intersection size at its budget: the median number of member pairs over the prototypes that
    have members (members: prototype, caption_id; the match stage's members.parquet), rounded to an integer --
    the neighbourhood size k of the `random_nbr` control."""
    counts = members.groupby("prototype").size().to_numpy()
    if len(counts) == 0:
        raise ValueError("members.parquet lists no member pairs: PDS has no intersection to take a size from.")
    return int(np.round(np.median(counts)))


def control_members(method: str, captions: pd.DataFrame, clip_image: np.ndarray, keep: np.ndarray,
                    caption_ids: np.ndarray, n_neighbours: int = 0) -> pd.DataFrame:
    """Which captions each control pair's text target averages, in `pds_text_targets`'s members layout
    (prototype = row of caption_ids, caption_id), so a control's target is computed exactly as PDS's is, in
    either protocol's text space. caption_ids (M,): the pairs `select_pairs` chose (kept, distinct images).

    `random_avg`: the kept captions of the pair's own image (the pair's own caption among them; captions the
    noise filter drops are left out, as they are left out of PDS's intersections). `random_nbr`: the
    n_neighbours kept pairs nearest (cosine of the CLIP image embeddings clip_image (n_images, d), rows =
    image_id) to the pair's image -- the pair itself first, then by decreasing cosine, ties (pairs of one image)
    in training-pair order: PDS's kind of target (a mean over about as many pairs as its median intersection)
    without clusters, matching or synthesis.
    """
    train = train_pairs(captions)
    ids = train["caption_id"].to_numpy(np.int64)
    kept = kept_positions(keep, len(ids))
    kept_ids = ids[kept]  # (n_kept,)
    kept_img = train["image_id"].to_numpy(np.int64)[kept]  # (n_kept,)
    row_of = pd.Series(np.arange(len(kept_ids)), index=kept_ids)
    caption_ids = np.asarray(caption_ids, dtype=np.int64)
    if not np.isin(caption_ids, kept_ids).all():
        raise ValueError("control pairs must be kept training pairs (select_pairs with the same keep mask).")
    self_row = row_of.loc[caption_ids].to_numpy()  # (M,) rows of the kept pairs
    if method == "random_avg":
        order = np.argsort(kept_img, kind="stable")  # kept pairs grouped by image, training-pair order within
        start = np.searchsorted(kept_img[order], kept_img[self_row], side="left")
        stop = np.searchsorted(kept_img[order], kept_img[self_row], side="right")
        rows = [order[a:b] for a, b in zip(start, stop, strict=True)]
    elif method == "random_nbr":
        if not 1 <= n_neighbours <= len(kept_ids):
            raise ValueError(f"random_nbr needs 1 <= n_neighbours <= {len(kept_ids)} kept pairs, got {n_neighbours} "
                             "(PDS's median intersection size, median_intersection_size).")
        # cosine per distinct image, then spread to its pairs: the pairs of one image tie exactly
        uniq, inv = np.unique(kept_img, return_inverse=True)
        x = clip_image[uniq].astype(np.float64)  # (n_kept_images, d)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        rows = []
        for a in range(0, len(self_row), 64):  # (64, n_kept) float64 blocks: ~60 MB at Flickr30k scale
            block = self_row[a:a + 64]
            sim = (x[inv[block]] @ x.T)[:, inv]  # (b, n_kept)
            sim[np.arange(len(block)), block] = np.inf  # the pair itself comes first
            rows.extend(np.argsort(-sim, axis=1, kind="stable")[:, :n_neighbours])
    else:
        raise ValueError(f"control_members is for random_avg and random_nbr, not {method!r}.")
    return pd.DataFrame({"prototype": np.repeat(np.arange(len(rows)), [len(r) for r in rows]),
                         "caption_id": kept_ids[np.concatenate(rows)] if rows else np.zeros(0, np.int64)})


def pds_text_targets(members: pd.DataFrame, prompt_caption_ids: np.ndarray, text_features: np.ndarray,
                     mode: str = "prototype") -> tuple[np.ndarray, int]:
    """Text side of each distilled pair, in the student's text-feature space: (M, d_t), n_fallback.

    mode `prototype` (PDS): the mean feature of the captions in the prototype's intersection (members:
    prototype, caption_id); a prototype without members (empty intersection, centroid fallback) uses its
    retrieved prompt caption, counted in n_fallback. mode `caption`: the retrieved prompt caption.
    """
    if mode not in TEXT_TARGETS:
        raise ValueError(f"unknown text_target {mode!r}; use one of {TEXT_TARGETS}.")
    prompt_caption_ids = np.asarray(prompt_caption_ids, dtype=np.int64)
    n = len(text_features)
    if len(prompt_caption_ids) == 0:
        raise ValueError("there are no prototypes: the distilled training set is empty.")
    if prompt_caption_ids.min() < 0 or prompt_caption_ids.max() >= n:
        raise ValueError(f"prompt caption ids must lie in [0, {n}) (rows of the caption features).")
    targets = text_features[prompt_caption_ids].astype(np.float64)  # (M, d_t)
    if mode == "caption":
        return targets.astype(np.float32), 0
    m_ids = members["prototype"].to_numpy(np.int64)
    c_ids = members["caption_id"].to_numpy(np.int64)
    if len(m_ids) and (m_ids.min() < 0 or m_ids.max() >= len(targets)):
        raise ValueError(f"members name prototypes outside [0, {len(targets)}); prototypes and members disagree.")
    if len(c_ids) and (c_ids.min() < 0 or c_ids.max() >= n):
        raise ValueError(f"member caption ids must lie in [0, {n}) (rows of the caption features).")
    sums = np.zeros_like(targets)
    np.add.at(sums, m_ids, text_features[c_ids].astype(np.float64))
    counts = np.bincount(m_ids, minlength=len(targets))
    has = counts > 0
    targets[has] = sums[has] / counts[has, None]
    return targets.astype(np.float32), int((~has).sum())


def synthetic_text_targets(synthetic: pd.DataFrame, prompts: pd.DataFrame, members: pd.DataFrame,
                           text_features: np.ndarray, mode: str = "prototype") -> tuple[np.ndarray, int]:
    """Text target of each synthetic image (rows of `synthetic`: file, caption, prototype), from the match
    stage's prompts (prototype, caption_id, ...) and members (prototype, caption_id): (n_synthetic, d_t) and
    the number of fallback prototypes (see `pds_text_targets`)."""
    if not (prompts["prototype"].to_numpy() == np.arange(len(prompts))).all():
        raise ValueError("prompts.parquet must list prototypes 0..M-1 in order; re-run the match stage.")
    proto = synthetic["prototype"].to_numpy(np.int64)
    if len(proto) == 0:
        raise ValueError("synthetic.parquet lists no images: the distilled training set is empty.")
    if proto.min() < 0 or proto.max() >= len(prompts):
        raise ValueError(f"synthetic.parquet names prototypes outside [0, {len(prompts)}); re-run synthesize "
                         "after match.")
    targets, n_fallback = pds_text_targets(members, prompts["caption_id"].to_numpy(), text_features, mode)
    return targets[proto], n_fallback


def clip_text_targets(synthetic: pd.DataFrame, prototype_text: np.ndarray, prompts: pd.DataFrame,
                      clip_text: np.ndarray, mode: str = "prototype") -> np.ndarray:
    """Text side of each synthetic image under the paper's protocol, in CLIP's text space: (n_synthetic, d).

    mode `prototype` (as released): row `synthetic.prototype` of the match stage's text prototypes
    prototype_text (M, d) -- an empty intersection's row is its text centroid, as released; mode `caption`:
    the CLIP embedding (clip_text (n_captions, d), rows = caption_id) of the retrieved prompt caption.
    """
    if mode not in TEXT_TARGETS:
        raise ValueError(f"unknown text_target {mode!r}; use one of {TEXT_TARGETS}.")
    proto = synthetic["prototype"].to_numpy(np.int64)
    if len(proto) == 0:
        raise ValueError("synthetic.parquet lists no images: the distilled training set is empty.")
    if proto.min() < 0 or proto.max() >= len(prototype_text) or len(prompts) != len(prototype_text):
        raise ValueError(f"synthetic.parquet names prototypes outside [0, {len(prototype_text)}) or the prototypes "
                         f"({len(prototype_text)}) and prompts ({len(prompts)}) disagree; re-run match and synthesize.")
    if prototype_text.shape[1] != clip_text.shape[1]:
        raise ValueError(f"text prototypes are {prototype_text.shape[1]}-d but the CLIP caption embeddings are "
                         f"{clip_text.shape[1]}-d; re-run match on the current embeddings.")
    if mode == "caption":
        return np.asarray(clip_text[prompts["caption_id"].to_numpy(np.int64)[proto]], np.float32)
    return np.asarray(prototype_text[proto], np.float32)


def nearest_real_images(prototype_image: np.ndarray, clip_image: np.ndarray, images: pd.DataFrame) -> np.ndarray:
    """For the `pds_real` ablation: the train image (image_id) whose CLIP embedding is nearest (cosine) to
    each image prototype, i.e. PDS with a perfect "synthesizer" that may only return real images.
    prototype_image (M, d), clip_image (n_images, d) rows = image_id -> (M,) int64."""
    train_ids = images.loc[images["split"] == "train", "image_id"].to_numpy(np.int64)
    if len(train_ids) == 0:
        raise ValueError("the images table has no train images to pick from.")
    x = clip_image[train_ids].astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    p = np.asarray(prototype_image, dtype=np.float64)
    p = p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12)
    return train_ids[np.argmax(p @ x.T, axis=1)]
