"""Stage `match` (notebooks/03_match.ipynb): pair image clusters with text clusters by the Hungarian
assignment on their overlap, average each matched intersection into an image and a text prototype, and
retrieve the training caption nearest each text prototype as its prompt (PDS step 3).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from pds import artifacts, data
from pds.cluster import CHUNK, check_finite

EMPTY = ("centroid", "drop")


def check_empty(empty: str) -> None:
    """How an empty matched intersection is handled: one of EMPTY (match.empty)."""
    if empty not in EMPTY:
        raise ValueError(f"unknown empty={empty!r}; use one of {EMPTY} (match.empty).")


def overlap_matrix(image_labels: np.ndarray, text_labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Contingency matrix C (K, K) int64: C[i, j] = pairs with image in cluster i and caption in cluster j.

    Always K x K (the reference's pandas crosstab silently shrinks when a cluster has no members).
    """
    image_labels, text_labels = np.asarray(image_labels), np.asarray(text_labels)
    if image_labels.shape != text_labels.shape or image_labels.ndim != 1:
        raise ValueError(f"image_labels {image_labels.shape} and text_labels {text_labels.shape} must be 1-d "
                         "with one label per kept pair.")
    for name, lab in (("image_labels", image_labels), ("text_labels", text_labels)):
        if len(lab) and (lab.min() < 0 or lab.max() >= n_clusters):
            raise ValueError(f"{name} must lie in [0, {n_clusters}); got [{lab.min()}, {lab.max()}].")
    flat = image_labels.astype(np.int64) * n_clusters + text_labels
    return np.bincount(flat, minlength=n_clusters * n_clusters).reshape(n_clusters, n_clusters)


def match_clusters(overlap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian assignment maximising the total overlap. overlap (K, K) -> (rows (K,), cols (K,)) with
    rows = 0..K-1 (image clusters in index order) and cols the matched text clusters."""
    overlap = np.asarray(overlap)
    if overlap.ndim != 2 or overlap.shape[0] != overlap.shape[1]:
        raise ValueError(f"overlap must be a square (K, K) matrix, got shape {overlap.shape}.")
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return rows.astype(np.int64), cols.astype(np.int64)


@dataclass
class Prototypes:
    """One row per matched (image cluster, text cluster); order = image-cluster index."""

    image: np.ndarray  # (M, d) image prototypes
    text: np.ndarray  # (M, d) text prototypes
    image_cluster: np.ndarray  # (M,) int64
    text_cluster: np.ndarray  # (M,) int64
    overlap: np.ndarray  # (M,) int64 pairs in the matched intersection
    fallback: np.ndarray  # (M,) bool: empty intersection, prototypes are the two centroids
    members: list[np.ndarray]  # M arrays of caption ids in the intersection (empty for fallback rows)
    n_empty: int  # empty intersections met (kept as fallback rows, or dropped)

    def __len__(self) -> int:
        return len(self.image)


def prototypes(image_pairs: np.ndarray, text_pairs: np.ndarray, caption_ids: np.ndarray,
               image_labels: np.ndarray, text_labels: np.ndarray, rows: np.ndarray, cols: np.ndarray,
               image_centroids: np.ndarray, text_centroids: np.ndarray, empty: str = "centroid") -> Prototypes:
    """Mean image / text embedding over each matched intersection (PDS `match_and_sort_centers`).

    image_pairs, text_pairs (n_kept, d) and caption_ids (n_kept,) are the kept pairs; labels (n_kept,);
    rows, cols (K,) the assignment; centroids (K, d). An empty intersection never gives NaN: with
    empty="centroid" its prototypes are the image centroid rows[m] and text centroid cols[m] (the
    reference does this for M < 300 and averages an empty array, i.e. NaN, above); empty="drop" omits it.
    Means are accumulated in float64 and returned as float32.
    """
    check_empty(empty)
    n = len(image_pairs)
    for name, x in (("text_pairs", text_pairs), ("caption_ids", caption_ids), ("image_labels", image_labels),
                    ("text_labels", text_labels)):
        if len(x) != n:
            raise ValueError(f"{name} has {len(x)} rows but image_pairs has {n}: pass the kept pairs only.")
    if len(rows) != len(cols):
        raise ValueError(f"rows ({len(rows)}) and cols ({len(cols)}) must have one entry per matched pair.")
    k = len(image_centroids)
    # index of the prototype each kept pair belongs to (-1: its (i, j) is not a matched pair)
    slot = np.full(k * k, -1, dtype=np.int64)
    slot[np.asarray(rows) * k + np.asarray(cols)] = np.arange(len(rows))
    proto_of_pair = slot[np.asarray(image_labels) * k + np.asarray(text_labels)]  # (n_kept,)
    order = np.argsort(proto_of_pair, kind="stable")  # pairs grouped by prototype, in pair order
    bounds = np.searchsorted(proto_of_pair[order], np.arange(len(rows) + 1))

    out = {"image": [], "text": [], "image_cluster": [], "text_cluster": [], "overlap": [], "fallback": [],
           "members": []}
    n_empty = 0
    for m, (i, j) in enumerate(zip(rows, cols, strict=True)):
        idx = order[bounds[m]:bounds[m + 1]]  # kept pairs in intersection (i, j), ascending
        if len(idx) == 0:
            n_empty += 1
            if empty == "drop":
                continue
            image_proto, text_proto = image_centroids[i], text_centroids[j]
        else:
            image_proto = image_pairs[idx].mean(axis=0, dtype=np.float64)
            text_proto = text_pairs[idx].mean(axis=0, dtype=np.float64)
        out["image"].append(image_proto)
        out["text"].append(text_proto)
        out["image_cluster"].append(i)
        out["text_cluster"].append(j)
        out["overlap"].append(len(idx))
        out["fallback"].append(len(idx) == 0)
        out["members"].append(np.asarray(caption_ids)[idx].astype(np.int64))
    d = image_pairs.shape[1]
    image = np.asarray(out["image"], dtype=np.float32).reshape(-1, d)  # (M, d)
    text = np.asarray(out["text"], dtype=np.float32).reshape(-1, text_pairs.shape[1])  # (M, d)
    check_finite(image, "image prototypes")  # only reachable through non-finite centroids
    check_finite(text, "text prototypes")
    return Prototypes(image, text, np.asarray(out["image_cluster"], np.int64),
                      np.asarray(out["text_cluster"], np.int64), np.asarray(out["overlap"], np.int64),
                      np.asarray(out["fallback"], bool), out["members"], n_empty)


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_topk(queries: np.ndarray, database: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The k database rows with the highest cosine to each query: (q, d), (n, d) -> (indices (q, k),
    cosines (q, k)), best first, ties -> lowest index. Scans the database in row blocks; k > 1 sorts each
    block fully, so use it for a few queries (showing examples), k = 1 for many (caption retrieval)."""
    queries, database = np.asarray(queries), np.asarray(database)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries {queries.shape} and database {database.shape} must be 2-d with the same "
                         "embedding dimension.")
    if not 1 <= k <= len(database):
        raise ValueError(f"k={k} must be between 1 and the database size ({len(database)}).")
    check_finite(queries, "queries")
    check_finite(database, "database")
    q = _normalize(queries)  # (q, d)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    best_s = np.zeros((len(q), 0), dtype=np.float32)
    for start in range(0, len(database), CHUNK):
        s = q @ _normalize(database[start:start + CHUNK]).T  # (q, c)
        if k == 1:
            top = np.argmax(s, axis=1)[:, None]  # first occurrence = lowest index
        else:
            top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        cand_i = np.concatenate([best_i, top + start], axis=1)
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, axis=1)], axis=1)
        pick = np.lexsort((cand_i, -cand_s), axis=1)[:, :k]  # by cosine, then by lower index
        best_i, best_s = np.take_along_axis(cand_i, pick, axis=1), np.take_along_axis(cand_s, pick, axis=1)
    return best_i, best_s


def retrieve_captions(text_protos: np.ndarray, text_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prompt caption per prototype: the training caption whose embedding has the highest cosine to the text
    prototype, searched over all training captions (noisy ones included, as the reference does).
    text_protos (M, d), text_train (n_train, d) -> (rows of text_train (M,), cosine (M,))."""
    idx, cos = cosine_topk(text_protos, text_train, k=1)
    return idx[:, 0], cos[:, 0]


def prototype_cosine(protos: Prototypes) -> np.ndarray:
    """Cosine between each image prototype and its text prototype (M,); the reference sorts by it."""
    return np.einsum("ij,ij->i", _normalize(protos.image), _normalize(protos.text))


def prompts_table(protos: Prototypes, prompt_caption_ids: np.ndarray, prompt_cosine: np.ndarray,
                  captions: pd.DataFrame) -> pd.DataFrame:
    """One row per prototype: prototype, caption_id, caption (the prompt), image_cluster, text_cluster,
    overlap, fallback, prompt_cosine (caption vs text prototype), proto_cosine (image vs text prototype)."""
    text = captions.set_index("caption_id").loc[np.asarray(prompt_caption_ids), "caption"].to_numpy()
    return pd.DataFrame({
        "prototype": np.arange(len(protos), dtype=np.int64),
        "caption_id": np.asarray(prompt_caption_ids, dtype=np.int64),
        "caption": text,
        "image_cluster": protos.image_cluster,
        "text_cluster": protos.text_cluster,
        "overlap": protos.overlap,
        "fallback": protos.fallback,
        "prompt_cosine": np.asarray(prompt_cosine, dtype=np.float32),
        "proto_cosine": prototype_cosine(protos).astype(np.float32),
    })


def summarize(protos: Prototypes, overlap: np.ndarray, n_kept: int) -> dict:
    """JSON-able summary: prototype and empty counts, matched overlap statistics."""
    matched = protos.overlap
    return {"n_prototypes": len(protos), "n_clusters": len(overlap), "n_empty": protos.n_empty,
            "n_fallback": int(protos.fallback.sum()), "n_kept": int(n_kept),
            "matched_pairs": int(matched.sum()), "matched_fraction": float(matched.sum() / max(n_kept, 1)),
            "overlap_min": int(matched.min()) if len(matched) else 0,
            "overlap_median": float(np.median(matched)) if len(matched) else 0.0,
            "overlap_max": int(matched.max()) if len(matched) else 0}


# ----------------------------------------------------------------------------------------------------
# artefacts: data/prototypes/


FILES = ("image.npy", "text.npy", "prompts.parquet", "members.parquet", "overlap.npy", "summary.json")


def save_prototypes(out_dir, protos: Prototypes, prompts: pd.DataFrame, overlap: np.ndarray,
                    summary: dict, made_from=()) -> artifacts.Artifact:
    """Write image.npy (M, d), text.npy (M, d), prompts.parquet, members.parquet (prototype, caption_id),
    overlap.npy (K, K) and summary.json, then manifest.json recording `made_from` (the opened embeddings and
    clusters, `artifacts.open_artifact`)."""
    out = Path(out_dir)
    if len(prompts) != len(protos):
        raise ValueError(f"prompts has {len(prompts)} rows for {len(protos)} prototypes.")
    artifacts.begin(out)
    data.save_npy(out / "image.npy", protos.image)
    data.save_npy(out / "text.npy", protos.text)
    data.save_table(out / "prompts.parquet", prompts)
    sizes = [len(m) for m in protos.members]
    members = pd.DataFrame({
        "prototype": np.repeat(np.arange(len(protos), dtype=np.int64), sizes),
        "caption_id": np.concatenate(protos.members) if protos.members else np.zeros(0, np.int64),
    })
    data.save_table(out / "members.parquet", members)
    data.save_npy(out / "overlap.npy", overlap)
    data.save_json(out / "summary.json", summary)
    return artifacts.write_manifest(out, "match", FILES, made_from)


def load_prototypes(proto_dir, made_from=()) -> Prototypes:
    """Read what `save_prototypes` wrote (the prompt captions are in prompts.parquet), refusing a folder that
    is not one finished run, or (`made_from`) not made from those opened clusters / embeddings."""
    d = Path(proto_dir)
    artifacts.open_artifact(d, "match", made_from)
    image, text = data.load_npy(d / "image.npy"), data.load_npy(d / "text.npy")
    prompts, members = data.load_table(d / "prompts.parquet"), data.load_table(d / "members.parquet")
    summary = data.load_json(d / "summary.json")
    if not len(image) == len(text) == len(prompts):
        raise ValueError(f"{d}: image.npy, text.npy and prompts.parquet disagree on the number of prototypes; "
                         "re-run the match stage.")
    groups = members.groupby("prototype")["caption_id"]
    member_list = [np.zeros(0, np.int64)] * len(prompts)
    for m, ids in groups:
        member_list[int(m)] = ids.to_numpy(np.int64)
    return Prototypes(image, text, prompts["image_cluster"].to_numpy(np.int64),
                      prompts["text_cluster"].to_numpy(np.int64), prompts["overlap"].to_numpy(np.int64),
                      prompts["fallback"].to_numpy(bool), member_list, int(summary["n_empty"]))
