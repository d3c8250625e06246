"""Stage `cluster` (notebooks/02_cluster.ipynb): drop the noisiest training pairs, then k-means separately on
the image and on the text embeddings of the kept pairs (PDS step 2; the reference is sklearn MiniBatchKMeans
with batch 10000, n_init 20 on the raw, unnormalised CLIP embeddings).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans, MiniBatchKMeans

from pds import artifacts, data

ALGORITHMS = ("minibatch", "kmeans", "faiss")
CHUNK = 8192  # rows per block in row-wise loops: float64 blocks of 768-d rows stay ~50 MB at any n
SAMPLE_SIZE = 100_000  # faiss k-means trains on this many rows (all of them when fewer)
# OpenBLAS kernels that faiss-cpu's bundled OpenBLAS (0.3.15) falls back to on CPUs it does not know, e.g.
# "Barcelona" on AMD EPYC (Zen): its sgemm there is ~2x slower than the Haswell kernel on one thread
SLOW_OPENBLAS = ("Prescott", "Barcelona", "Core2", "Atom", "Nehalem", "Opteron", "Katmai", "Banias")


def check_finite(x: np.ndarray, name: str) -> None:
    """Raise a ValueError naming the first row of `x` that holds NaN or inf."""
    for i in range(0, len(x), CHUNK):
        block = np.asarray(x[i:i + CHUNK])
        bad = ~np.isfinite(block).reshape(len(block), -1).all(axis=1)
        if bad.any():
            raise ValueError(f"{name} has NaN/inf values (first in row {i + int(np.argmax(bad))}); "
                             "re-run the embed stage or drop those rows.")


def check_pairs(image_pairs: np.ndarray, text_pairs: np.ndarray) -> None:
    """Both modalities must be finite 2-d arrays with one row per training pair."""
    for name, x in (("image_pairs", image_pairs), ("text_pairs", text_pairs)):
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty (n_pairs, d) array, got shape {x.shape}.")
    if len(image_pairs) != len(text_pairs):
        raise ValueError(f"image_pairs has {len(image_pairs)} rows but text_pairs has {len(text_pairs)}: "
                         "pair k must be (image of caption k, caption k); rebuild them with train_pairs().")
    check_finite(image_pairs, "image_pairs")
    check_finite(text_pairs, "text_pairs")


def check_n_clusters(n_clusters) -> None:
    """K must be a whole number >= 1 (it is the budget M, base.n_pairs)."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer) or n_clusters < 1:
        raise ValueError(f"n_clusters={n_clusters!r} must be a whole number >= 1: it is the number of synthetic "
                         "pairs M; set base.n_pairs (n_clusters) to a positive count, e.g. 100.")


def check_rm_ratio(rm_ratio) -> None:
    """The noise-filter ratio must be a number in [0, 1) (the fraction of pairs dropped)."""
    if isinstance(rm_ratio, bool) or not isinstance(rm_ratio, int | float | np.number) or not 0 <= rm_ratio < 1:
        raise ValueError(f"rm_ratio={rm_ratio!r} must be in [0, 1): it is the fraction of the lowest-cosine pairs "
                         "dropped (cluster.rm_ratio; 0 keeps every pair, 0.2 is the reference).")


def check_params(n_clusters, rm_ratio, algorithm: str = "minibatch", batch_size: int = 10000,
                 n_init: int = 20) -> None:
    """Every cluster parameter at once, before any work (notebook 02 calls this first)."""
    check_n_clusters(n_clusters)
    check_rm_ratio(rm_ratio)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown k-means algorithm {algorithm!r}; use one of {ALGORITHMS} (cluster.algorithm).")
    for name, value in (("n_init", n_init), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}={value!r} must be a whole number >= 1 (cluster.{name}).")


def train_pairs(image_emb: np.ndarray, text_emb: np.ndarray, captions: pd.DataFrame):
    """The training pairs, one per train-split caption: pair k = (image of caption k, caption k).

    image_emb (n_images, d), text_emb (n_captions, d), captions (caption_id, image_id, split, ...) whose ids
    are rows of the two arrays. Returns (image_pairs (n, d), text_pairs (n, d), caption_ids (n,),
    image_ids (n,)), in caption-table order.
    """
    if len(text_emb) != len(captions):
        raise ValueError(f"text.npy has {len(text_emb)} rows but captions.parquet lists {len(captions)}: "
                         "the embeddings are stale; re-run the embed stage.")
    train = captions[captions["split"] == "train"]
    if train.empty:
        raise ValueError("no train-split captions: check the dataset's split field.")
    caption_ids = train["caption_id"].to_numpy(np.int64)  # (n,)
    image_ids = train["image_id"].to_numpy(np.int64)  # (n,)
    if image_ids.min() < 0 or image_ids.max() >= len(image_emb):
        raise ValueError(f"captions reference image ids up to {image_ids.max()} but image.npy has "
                         f"{len(image_emb)} rows; re-run the embed stage.")
    return image_emb[image_ids], text_emb[caption_ids], caption_ids, image_ids


def pair_cosine(image_pairs: np.ndarray, text_pairs: np.ndarray) -> np.ndarray:
    """Cosine of each (image, caption) pair: (n, d), (n, d) -> (n,) float32.

    Computed in float64 row blocks rather than on normalised copies, so no (n, d) temporary is made.
    """
    check_pairs(image_pairs, text_pairs)
    if image_pairs.shape[1] != text_pairs.shape[1]:
        raise ValueError(f"image ({image_pairs.shape[1]}-d) and text ({text_pairs.shape[1]}-d) embeddings must "
                         "share one CLIP space to compare them; embed both with the same CLIP.")
    cos = np.empty(len(image_pairs), dtype=np.float32)  # (n,)
    for i in range(0, len(cos), CHUNK):
        a = image_pairs[i:i + CHUNK].astype(np.float64)
        b = text_pairs[i:i + CHUNK].astype(np.float64)
        dot = np.einsum("ij,ij->i", a, b)
        norms = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
        cos[i:i + CHUNK] = dot / np.maximum(norms, 1e-12)  # a zero vector gets cosine 0, not NaN
    return cos


def noise_filter(cos: np.ndarray, rm_ratio: float) -> np.ndarray:
    """Keep mask (n,) bool that drops the floor(rm_ratio * n) pairs with the lowest cosine.

    As the reference (`remove_low_sim_pairs`): the count is int(n * rm_ratio); ties are broken by a stable
    sort, so among equal cosines the earlier pairs are dropped first and the mask is deterministic.
    """
    check_rm_ratio(rm_ratio)
    cos = np.asarray(cos)
    if not np.isfinite(cos).all():
        raise ValueError("pair cosines contain NaN/inf; check the embeddings for zero or non-finite rows.")
    keep = np.ones(len(cos), dtype=bool)
    keep[np.argsort(cos, kind="stable")[: int(len(cos) * rm_ratio)]] = False
    return keep


def import_faiss():
    """Import faiss with its bundled OpenBLAS on a fast kernel. That OpenBLAS reads OPENBLAS_CORETYPE when
    faiss is first imported (after numpy's own OpenBLAS), so setting it here still takes effect; it is set
    to Haswell only when unset and the CPU has AVX2 + FMA (Haswell kernels on a CPU without them crash)."""
    import os
    import sys

    if "faiss" not in sys.modules and not os.environ.get("OPENBLAS_CORETYPE") and _cpu_has("avx2", "fma"):
        os.environ["OPENBLAS_CORETYPE"] = "Haswell"
    import faiss

    return faiss


def faiss_openblas_kernel() -> str | None:
    """The kernel ("architecture") faiss's bundled OpenBLAS runs with, per threadpoolctl; None if not found."""
    import_faiss()
    from threadpoolctl import threadpool_info

    arch = [p.get("architecture") for p in threadpool_info()
            if p.get("internal_api") == "openblas" and "faiss" in p.get("filepath", "")]
    return arch[0] if arch else None


def _cpu_has(*flags: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            line = next((x for x in f if x.startswith("flags")), "")
    except OSError:
        return False
    have = set(line.split(":", 1)[-1].split())
    return all(flag in have for flag in flags)


def sample_rows(n: int, sample_size: int, seed: int) -> np.ndarray:
    """Sorted row indices (min(n, sample_size),) of the k-means training sample: the same for the in-memory
    and the streamed cluster stage, which both number the kept pairs in pair order."""
    if sample_size < 1:
        raise ValueError(f"sample_size={sample_size} must be >= 1.")
    if sample_size >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, sample_size, replace=False)).astype(np.int64)


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (squared Euclidean, float64, ties -> lowest index) of each row: (n, d), (K, d) -> (n,)
    int64. In float64 so that the label of a row does not depend on how rows are blocked or on BLAS threads."""
    c = np.asarray(centroids, dtype=np.float64)  # (K, d)
    c_sq = np.einsum("ij,ij->i", c, c)  # (K,)
    labels = np.empty(len(x), dtype=np.int64)
    for i in range(0, len(x), CHUNK):
        block = np.asarray(x[i:i + CHUNK], dtype=np.float64)
        labels[i:i + CHUNK] = np.argmin(c_sq[None, :] - 2.0 * (block @ c.T), axis=1)  # ||x||^2 is constant per row
    return labels


def faiss_kmeans(x: np.ndarray, n_clusters: int, seed: int, sample_size: int = SAMPLE_SIZE,
                 max_iter: int | None = None) -> np.ndarray:
    """Centroids (K, d) float32 of faiss k-means trained on `sample_rows(n, sample_size, seed)` of x (n, d)."""
    rows = sample_rows(len(x), sample_size, seed)
    if n_clusters > len(rows):
        raise ValueError(f"n_clusters={n_clusters} exceeds the k-means sample ({len(rows)} rows); raise "
                         "sample_size.")
    return faiss_train(np.asarray(x[rows], dtype=np.float32), n_clusters, seed, max_iter)


def faiss_train(sample: np.ndarray, n_clusters: int, seed: int, max_iter: int | None = None) -> np.ndarray:
    """faiss k-means (Lloyd) on all rows of `sample` (s, d), seeded with k-means++ on it (sklearn's
    kmeans_plusplus: faiss's own random seeds were 2.4 % worse in inertia at K = 500). max_iter None means
    faiss's default 25 iterations. Returns centroids (K, d) float32."""
    from sklearn.cluster import kmeans_plusplus

    faiss = import_faiss()
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    seeds, _ = kmeans_plusplus(sample, n_clusters, random_state=seed)
    # max_points_per_centroid: faiss would otherwise subsample to 256 rows per centroid behind our back
    model = faiss.Kmeans(sample.shape[1], n_clusters, niter=25 if max_iter is None else max_iter, seed=seed,
                         max_points_per_centroid=len(sample) + 1, min_points_per_centroid=1, verbose=False)
    model.train(sample, init_centroids=np.ascontiguousarray(seeds, dtype=np.float32))
    return np.asarray(model.centroids, dtype=np.float32).reshape(n_clusters, -1)


def kmeans(x: np.ndarray, n_clusters: int, seed: int, algorithm: str = "minibatch", batch_size: int = 10000,
           n_init: int = 20, max_iter: int | None = None, sample_size: int = SAMPLE_SIZE):
    """k-means on the rows of x (n, d). Returns (labels (n,) int64, centroids (K, d) float32, inertia).

    `minibatch` is the reference (sklearn MiniBatchKMeans); `kmeans` is full Lloyd k-means (sklearn KMeans,
    `batch_size` unused). Labels are the nearest final centroid of every row. Deterministic given `seed`.
    max_iter None keeps sklearn's default (100 for minibatch, 300 for kmeans). `faiss` trains on a sample of
    `sample_size` rows (see faiss_kmeans; batch_size and n_init unused), then assigns every row (`assign`).
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown k-means algorithm {algorithm!r}; use one of {ALGORITHMS}.")
    if not 1 <= n_clusters <= len(x):
        raise ValueError(f"n_clusters={n_clusters} must be between 1 and the number of rows ({len(x)}).")
    if n_init < 1 or batch_size < 1:
        raise ValueError(f"n_init={n_init} and batch_size={batch_size} must be >= 1.")
    check_finite(x, "k-means input")
    if algorithm == "faiss":
        centroids = faiss_kmeans(x, n_clusters, seed, sample_size, max_iter)
        labels = assign(x, centroids)
        return labels, centroids, inertia(x, labels, centroids)
    extra = {} if max_iter is None else {"max_iter": max_iter}
    if algorithm == "minibatch":
        model = MiniBatchKMeans(n_clusters=n_clusters, batch_size=batch_size, n_init=n_init, random_state=seed,
                                **extra)
    else:
        model = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed, algorithm="lloyd", **extra)
    labels = model.fit_predict(x).astype(np.int64)  # (n,)
    centroids = model.cluster_centers_.astype(np.float32)  # (K, d)
    return labels, centroids, inertia(x, labels, centroids)


def inertia(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> float:
    """Sum of squared distances of the rows of x (n, d) to their centroid, summed in float64 row blocks in a
    fixed order: sklearn's `inertia_` is a multi-threaded sum whose last digits vary with the thread count,
    and it goes into summary.json, which must not change between machines."""
    total = 0.0
    for i in range(0, len(x), CHUNK):
        diff = x[i:i + CHUNK].astype(np.float64) - centroids[labels[i:i + CHUNK]]
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


@dataclass
class Clusters:
    """Output of `cluster_pairs`. Labels index the kept pairs only (pair rows where `keep` is True)."""

    keep: np.ndarray  # (n,) bool over all training pairs
    image_labels: np.ndarray  # (n_kept,) int64 in [0, K)
    text_labels: np.ndarray  # (n_kept,) int64 in [0, K)
    image_centroids: np.ndarray  # (K, d) float32
    text_centroids: np.ndarray  # (K, d) float32
    image_inertia: float
    text_inertia: float

    @property
    def n_clusters(self) -> int:
        return len(self.image_centroids)


def cluster_pairs(image_pairs: np.ndarray, text_pairs: np.ndarray, n_clusters: int, rm_ratio: float = 0.2,
                  seed: int = 42, algorithm: str = "minibatch", batch_size: int = 10000,
                  n_init: int = 20, sample_size: int = SAMPLE_SIZE) -> Clusters:
    """PDS step 2: noise filter, then k-means with K = n_clusters per modality on the kept pairs.

    image_pairs (n, d), text_pairs (n, d) raw embeddings of the training pairs. Both modalities are
    clustered with the same seed, as in the reference.
    """
    check_params(n_clusters, rm_ratio, algorithm, batch_size, n_init)
    cos = pair_cosine(image_pairs, text_pairs)  # (n,)  (validates shapes and finiteness)
    keep = noise_filter(cos, rm_ratio)  # (n,)
    n_kept = int(keep.sum())
    if n_clusters > n_kept:
        raise ValueError(f"n_clusters={n_clusters} but only {n_kept} of {len(keep)} training pairs remain after "
                         f"dropping rm_ratio={rm_ratio}; lower base.n_pairs or cluster.rm_ratio.")
    fits = [kmeans(x[keep], n_clusters, seed, algorithm, batch_size, n_init, sample_size=sample_size)
            for x in (image_pairs, text_pairs)]
    (image_labels, image_centroids, image_inertia), (text_labels, text_centroids, text_inertia) = fits
    return Clusters(keep, image_labels, text_labels, image_centroids, text_centroids, image_inertia, text_inertia)


def cluster_sizes(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Members per cluster (K,) int64, zeros included."""
    return np.bincount(labels, minlength=n_clusters)


def summarize(clusters: Clusters) -> dict:
    """Small JSON-able summary: counts, inertias and cluster-size statistics per modality."""
    out = {"n_pairs": len(clusters.keep), "n_kept": int(clusters.keep.sum()), "n_clusters": clusters.n_clusters}
    for name in ("image", "text"):
        sizes = cluster_sizes(getattr(clusters, f"{name}_labels"), clusters.n_clusters)
        out[name] = {"inertia": getattr(clusters, f"{name}_inertia"), "empty_clusters": int((sizes == 0).sum()),
                     "size_min": int(sizes.min()), "size_median": float(np.median(sizes)),
                     "size_max": int(sizes.max())}
    return out


def nearest_members(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, ids: np.ndarray, cluster: int,
                    n: int) -> np.ndarray:
    """Up to n distinct ids (e.g. image ids) of the members of `cluster` nearest its centroid (Euclidean,
    as k-means measures). x (m, d), labels (m,), centroids (K, d), ids (m,). For showing examples."""
    rows = np.flatnonzero(labels == cluster)
    dist = np.linalg.norm(x[rows] - centroids[cluster], axis=1)  # (members,)
    ordered = ids[rows[np.argsort(dist, kind="stable")]]
    _, first = np.unique(ordered, return_index=True)  # an image is in ~5 pairs: show it once
    return ordered[np.sort(first)][:n]


# ----------------------------------------------------------------------------------------------------
# artefacts: data/clusters/


FILES = ("keep.npy", "caption_ids.npy", "image_labels.npy", "text_labels.npy", "image_centroids.npy",
         "text_centroids.npy", "summary.json")


def save_clusters(out_dir, clusters: Clusters, caption_ids: np.ndarray, summary: dict | None = None,
                  made_from=()) -> artifacts.Artifact:
    """Write keep.npy, caption_ids.npy (caption id of every pair row, so match can check it reads the same
    pairs), image/text_labels.npy, image/text_centroids.npy and summary.json (plus any `summary` extras), then
    manifest.json recording `made_from` (the opened embeddings, `artifacts.open_artifact`)."""
    out = Path(out_dir)
    if len(caption_ids) != len(clusters.keep):
        raise ValueError(f"caption_ids has {len(caption_ids)} rows but the keep mask {len(clusters.keep)}.")
    artifacts.begin(out)
    data.save_npy(out / "keep.npy", clusters.keep)
    data.save_npy(out / "caption_ids.npy", np.asarray(caption_ids, dtype=np.int64))
    for name in ("image_labels", "text_labels", "image_centroids", "text_centroids"):
        data.save_npy(out / f"{name}.npy", getattr(clusters, name))
    data.save_json(out / "summary.json", {**summarize(clusters), **(summary or {})})
    return artifacts.write_manifest(out, "cluster", FILES, made_from)


def load_clusters(cluster_dir, caption_ids: np.ndarray | None = None, made_from=()) -> Clusters:
    """Read what `save_clusters` wrote, refusing a folder that is not one finished run. With `caption_ids` (n,)
    (the training pairs the caller holds), check that the clusters were computed on exactly those pairs; with
    `made_from` (the opened embeddings), that they were made from that embed run."""
    d = Path(cluster_dir)
    artifacts.open_artifact(d, "cluster", made_from)
    arrays = {name: data.load_npy(d / f"{name}.npy") for name in
              ("keep", "caption_ids", "image_labels", "text_labels", "image_centroids", "text_centroids")}
    summary = data.load_json(d / "summary.json")
    clusters = Clusters(arrays["keep"], arrays["image_labels"], arrays["text_labels"], arrays["image_centroids"],
                        arrays["text_centroids"], summary["image"]["inertia"], summary["text"]["inertia"])
    n_kept = int(clusters.keep.sum())
    if len(clusters.image_labels) != n_kept or len(clusters.text_labels) != n_kept:
        raise ValueError(f"{d}: labels do not match the keep mask ({n_kept} kept pairs); re-run the cluster stage.")
    if caption_ids is not None and not np.array_equal(arrays["caption_ids"], caption_ids):
        raise ValueError(f"{d} was computed on other training pairs than the current embeddings; "
                         "re-run the cluster stage.")
    return clusters
