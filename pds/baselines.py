"""Coreset baselines at the distillation budget (notebook 05_evaluate): random, herding and k-center
selections of real training pairs, made on the CLIP embeddings of the embed stage.

Each function returns positions (0..n-1) into the array of candidate pairs it was given; callers map them to
caption ids. A pair is represented by `pair_features`: its L2-normalised image embedding concatenated with its
L2-normalised caption embedding, so both modalities weigh equally in the distances (the distilled unit is a
pair, and retrieval is scored in both directions).
"""

import numpy as np


def _check_budget(n: int, n_pairs: int) -> None:
    if n == 0:
        raise ValueError("there are no candidate training pairs to select from; check the train split.")
    if not 1 <= n_pairs <= n:
        raise ValueError(f"budget n_pairs={n_pairs} must be between 1 and the {n} candidate training pairs; "
                         "lower base.n_pairs or use a larger dataset.")


def pair_features(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """[image / |image|, text / |text|] per pair: image (n, d_i) and text (n, d_t) -> (n, d_i + d_t) float32."""
    if len(image) != len(text):
        raise ValueError(f"image ({len(image)}) and text ({len(text)}) embeddings must have one row per pair.")
    parts = []
    for name, x in (("image", image), ("text", text)):
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError(f"{name} embeddings contain NaN or inf; re-run the embed stage.")
        parts.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
    return np.concatenate(parts, axis=1).astype(np.float32)  # (n, d_i + d_t)


def select_random(n: int, n_pairs: int, seed: int) -> np.ndarray:
    """`n_pairs` distinct positions out of `n`, uniformly at random (sorted)."""
    _check_budget(n, n_pairs)
    return np.sort(np.random.default_rng(seed).choice(n, size=n_pairs, replace=False)).astype(np.int64)


def select_herding(x: np.ndarray, n_pairs: int) -> np.ndarray:
    """Herding (Welling 2009, as in the coreset baselines of dataset distillation): greedily add the pair
    that keeps the mean of the selection closest to the mean of all pairs.

    x (n, d) -> (n_pairs,) positions in selection order. Deterministic; ties go to the lowest index.
    """
    x = np.asarray(x, dtype=np.float64)  # (n, d)
    _check_budget(len(x), n_pairs)
    mu = x.mean(axis=0)  # (d,)
    chosen = np.zeros(len(x), dtype=bool)
    total = np.zeros_like(mu)
    order = []
    for t in range(1, n_pairs + 1):
        # || mu - (total + x_i) / t || is smallest where || t * mu - total - x_i || is
        dist = np.linalg.norm((t * mu - total)[None] - x, axis=1)  # (n,)
        dist[chosen] = np.inf
        i = int(np.argmin(dist))
        chosen[i] = True
        total += x[i]
        order.append(i)
    return np.asarray(order, dtype=np.int64)


def select_kcenter(x: np.ndarray, n_pairs: int, seed: int) -> np.ndarray:
    """Greedy k-center (farthest-point) selection (Sener & Savarese 2018): start from a random pair, then
    repeatedly add the pair farthest (Euclidean) from everything chosen so far.

    x (n, d) -> (n_pairs,) positions in selection order; ties go to the lowest index.
    """
    x = np.asarray(x, dtype=np.float64)  # (n, d)
    _check_budget(len(x), n_pairs)
    first = int(np.random.default_rng(seed).integers(len(x)))
    order = [first]
    min_dist = np.linalg.norm(x - x[first], axis=1)  # (n,) distance to the nearest chosen pair
    min_dist[first] = -1.0  # chosen pairs are never picked again, even among duplicates
    for _ in range(n_pairs - 1):
        i = int(np.argmax(min_dist))
        order.append(i)
        min_dist = np.minimum(min_dist, np.linalg.norm(x - x[i], axis=1))
        min_dist[order] = -1.0
    return np.asarray(order, dtype=np.int64)


def select_random_images(image_ids: np.ndarray, n_pairs: int, seed: int) -> np.ndarray:
    """`n_pairs` positions out of the pairs `image_ids` (n,) whose images are all distinct: `select_random`'s draw,
    in which every pair whose image an earlier (lower) position already holds is replaced by a draw from the same
    generator among the pairs of images not yet held, until no image repeats (sorted positions).

    For coresets whose unit is an image with a text target of its own (the controls with averaged targets):
    two pairs of one image would give the student the same image with the same target twice. Where `select_random`
    draws distinct images (most draws at small budgets) the two selections are equal, so such a control and the
    plain random pairs of the same pool differ only in their text targets.
    """
    image_ids = np.asarray(image_ids)
    n = len(image_ids)
    _check_budget(n, n_pairs)
    if n_pairs > len(np.unique(image_ids)):
        raise ValueError(f"budget n_pairs={n_pairs} exceeds the {len(np.unique(image_ids))} distinct images of the "
                         f"{n} candidate pairs; lower base.n_pairs.")
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(n, size=n_pairs, replace=False))
    while True:
        _, first = np.unique(image_ids[pos], return_index=True)
        pos = np.sort(pos[first])  # the lowest position of each image stays
        need = n_pairs - len(pos)
        if need == 0:
            return pos.astype(np.int64)
        free = np.flatnonzero(~np.isin(image_ids, image_ids[pos]))  # pairs of images not yet held
        pos = np.sort(np.concatenate([pos, rng.choice(free, size=need, replace=False)]))
