"""PDS's cluster and match stages streamed over shards (pds.shards), with memory independent of the number of
pairs N (docs/scale.md). Each pass maps a function over the shards and reduces small per-shard results in
shard order; the map runs in this process (`PDS_ENGINE=local`) or as tasks on a Ray cluster
(`PDS_ENGINE=ray`: joins the cluster at RAY_ADDRESS, else starts a local one with PDS_NUM_WORKERS CPUs,
default 2). Outputs do not depend on the engine: every shard runs the same code with one BLAS thread and
results are reduced in shard order, so both engines give byte-identical outputs.

Passes: (1) pair cosines + a histogram of their bit patterns, (2) that histogram refined inside one bin, which
gives the exact noise-filter threshold (the same kept pairs as pds.cluster.noise_filter), (3) nearest-centroid
labels and sparse (image cluster, text cluster) counts, Hungarian on the total, (4) sums over the matched
intersections -> prototypes, (5) the exact nearest caption to each text prototype. Each shard's result of each
pass is written atomically under `work_dir/<pass>-<digest of its inputs>/`; a rerun after a killed pass skips
the shards already done and never reads a partial file.
"""

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pds import cluster, data, match
from pds.shards import Shards

ENGINES = ("local", "ray")
BINS = 1 << 16  # histogram bins per level: two levels of 16 bits pin a float32 exactly


def engine_name(engine: str | None = None) -> str:
    name = engine or os.environ.get("PDS_ENGINE", "local")
    if name not in ENGINES:
        raise ValueError(f"PDS_ENGINE={name!r}; use one of {ENGINES}.")
    return name


def init_ray():
    """Join the Ray cluster at RAY_ADDRESS, or start a local one (PDS_NUM_WORKERS CPUs, default 2)."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            workers = int(os.environ.get("PDS_NUM_WORKERS", "2"))
            if workers < 1:
                raise ValueError(f"PDS_NUM_WORKERS={workers} must be >= 1.")
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    return ray


# ----------------------------------------------------------------------------------------------------
# per-shard work (runs in this process or in a Ray worker)


def sort_key(cos: np.ndarray) -> np.ndarray:
    """uint32 keys ordered like the float32 values (cos (n,) float32, finite): flip the sign bit of
    non-negatives, all bits of negatives. -0.0 is first made +0.0 so that equal values get equal keys."""
    bits = (np.asarray(cos, np.float32) + np.float32(0.0)).view(np.uint32)
    return np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31)).astype(np.uint32)


def keep_mask(key: np.ndarray, threshold: dict, ties_before: int) -> np.ndarray:
    """Kept pairs of one shard: key above the threshold key, or equal to it and not among the first
    `drop_ties` equal values in global order (the stable sort of pds.cluster.noise_filter)."""
    if threshold["key"] is None:
        return np.ones(len(key), dtype=bool)
    t = np.uint32(threshold["key"])
    tie = key == t
    rank = ties_before + np.cumsum(tie) - 1  # global rank among the tied pairs
    return (key > t) | (tie & (rank >= threshold["drop_ties"]))


def _task(name: str, shards: Shards, i: int, out: str, params: dict) -> int:
    """Run one pass on shard i and write its result atomically; returns this process's peak RSS (KiB)."""
    import resource

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one BLAS thread per shard in both engines: same code, same bits
        result = TASKS[name](shards, i, params)
    data.atomic_write(out, lambda tmp: _savez(tmp, result))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _savez(tmp: Path, arrays: dict) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _named(shards: Shards, i: int, e: Exception) -> ValueError:
    return ValueError(f"shard {i} ({shards.root / shards.manifest['shards'][i]['img_emb']['name']}): {e}")


def _cosine_task(shards: Shards, i: int, params: dict) -> dict:
    img, txt, _ = shards.read(i)
    try:
        cos = cluster.pair_cosine(img, txt)  # (n_i,) float32, float64 inside as in the in-memory stage
    except ValueError as e:
        raise _named(shards, i, e) from None
    key = sort_key(cos)
    return {"key": key, "hist": np.bincount(key >> 16, minlength=BINS).astype(np.int64)}


def _refine_task(shards: Shards, i: int, params: dict) -> dict:
    key = params["cosine"](i)["key"]
    low = key[(key >> 16) == params["bin"]] & np.uint32(BINS - 1)
    return {"hist": np.bincount(low, minlength=BINS).astype(np.int64)}


def _assign_task(shards: Shards, i: int, params: dict) -> dict:
    img, txt, _ = shards.read(i)
    keep = keep_mask(params["cosine"](i)["key"], params["threshold"], int(params["ties_before"][i]))
    k = len(params["image_centroids"])
    out = {"keep": keep}
    for name, x in (("image", img), ("text", txt)):
        rows = np.asarray(x[keep], dtype=np.float32)  # (n_kept_i, d)
        labels = cluster.assign(rows, params[f"{name}_centroids"])
        out[f"{name}_labels"] = labels
        out[f"{name}_inertia"] = np.float64(cluster.inertia(rows, labels, params[f"{name}_centroids"]))
    codes, counts = np.unique(out["image_labels"] * k + out["text_labels"], return_counts=True)
    out |= {"codes": codes.astype(np.int64), "counts": counts.astype(np.int64)}
    return out


def _sums_task(shards: Shards, i: int, params: dict) -> dict:
    from scipy import sparse

    img, txt, meta = shards.read(i)
    a = params["assign"](i)
    keep, slot = a["keep"], params["slot"]
    proto = slot[a["image_labels"] * params["k"] + a["text_labels"]]  # (n_kept_i,) -1: not matched
    m, d = params["m"], shards.dim
    sums = {"image": np.zeros((m, d)), "text": np.zeros((m, d))}
    kept_rows = np.flatnonzero(keep)
    for start in range(0, len(kept_rows), cluster.CHUNK):
        p = proto[start:start + cluster.CHUNK]
        sel = p >= 0
        if not sel.any():
            continue
        rows = kept_rows[start:start + cluster.CHUNK][sel]
        # one-hot (M, b) times the block: a float64 sum per prototype, rows added in pair order
        onehot = sparse.csr_matrix((np.ones(int(sel.sum())), (p[sel], np.arange(int(sel.sum())))),
                                   shape=(m, int(sel.sum())))
        for name, x in (("image", img), ("text", txt)):
            sums[name] += onehot @ np.asarray(x[rows], dtype=np.float64)
    matched = proto >= 0
    caption_ids = meta["caption_id"].to_numpy(np.int64)[kept_rows[matched]]
    return {"image_sums": sums["image"], "text_sums": sums["text"],
            "counts": np.bincount(proto[matched], minlength=m).astype(np.int64),
            "member_prototype": proto[matched], "member_caption_id": caption_ids}


def _nearest_task(shards: Shards, i: int, params: dict) -> dict:
    _, txt, meta = shards.read(i)
    rows, cos = nearest_rows(params["queries"], txt)
    return {"row": rows, "cosine": cos, "caption_id": meta["caption_id"].to_numpy(np.int64)[rows]}


def nearest_rows(queries: np.ndarray, database: np.ndarray, margin: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Row of `database` (n, d) with the highest cosine to each query (q, d), ties -> lowest row, and that cosine
    (q,) float64. A float32 matrix product finds the candidates within `margin` of each query's best (its
    rounding error for unit rows is ~d * 6e-8, far below the margin); their cosines are then recomputed in
    float64, so the answer does not depend on how the rows are split into shards or blocks."""
    q64 = np.asarray(queries, np.float64)
    q64 /= np.maximum(np.linalg.norm(q64, axis=1, keepdims=True), 1e-12)
    q32 = q64.astype(np.float32)
    best_row = np.zeros(len(q64), np.int64)
    best_cos = np.full(len(q64), -np.inf)
    for start in range(0, len(database), cluster.CHUNK):
        x64 = np.asarray(database[start:start + cluster.CHUNK], np.float64)
        x64 /= np.maximum(np.linalg.norm(x64, axis=1, keepdims=True), 1e-12)
        s = q32 @ x64.astype(np.float32).T  # (q, c) float32
        qi, ci = np.nonzero(s >= s.max(axis=1, keepdims=True) - margin)  # row-major: ci ascending per query
        exact = np.einsum("ij,ij->i", q64[qi], x64[ci])  # (candidates,) float64
        order = np.lexsort((ci, -exact, qi))  # per query: highest cosine, then lowest row
        first = order[np.searchsorted(qi[order], np.arange(len(q64)))]
        better = exact[first] > best_cos  # strict: an earlier block keeps ties
        best_cos = np.where(better, exact[first], best_cos)
        best_row = np.where(better, ci[first] + start, best_row)
    return best_row, best_cos


TASKS = {"cosine": _cosine_task, "refine": _refine_task, "assign": _assign_task, "sums": _sums_task,
         "nearest": _nearest_task}


class _Reader:
    """Picklable loader of one earlier pass's per-shard result (what a later pass reads besides the shard)."""

    def __init__(self, folder: Path):
        self.folder = str(folder)

    def __call__(self, i: int) -> dict:
        with np.load(Path(self.folder) / f"shard_{i}.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


# ----------------------------------------------------------------------------------------------------
# the driver


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes() if isinstance(p, np.ndarray) else repr(p).encode())
        h.update(b"|")
    return h.hexdigest()[:16]


@dataclass
class Runner:
    """Runs one pass over all shards on the chosen engine, resuming from what an earlier run finished."""

    shards: Shards
    work_dir: Path
    engine: str
    seconds: dict = field(default_factory=dict)  # wall time per pass (the benchmark reads it)
    peak_rss_kib: dict = field(default_factory=dict)  # largest max-RSS of the processes that ran each pass

    def run(self, name: str, params: dict, *digest_parts) -> _Reader:
        start = time.perf_counter()
        reader = self._run(name, params, *digest_parts)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return reader

    def _run(self, name: str, params: dict, *digest_parts) -> _Reader:
        files = [s[k]["sha256"] for s in self.shards.manifest["shards"] for k in ("img_emb", "text_emb", "metadata")]
        folder = Path(self.work_dir) / f"{name}-{_digest(files, *digest_parts)}"
        folder.mkdir(parents=True, exist_ok=True)
        todo = [i for i in range(self.shards.n_shards) if not (folder / f"shard_{i}.npz").exists()]
        outs = {i: str(folder / f"shard_{i}.npz") for i in todo}
        if self.engine == "local":
            peaks = [_task(name, self.shards, i, outs[i], params) for i in todo]
        elif todo:
            ray = init_ray()
            shards_ref, params_ref = ray.put(self.shards), ray.put(params)
            remote = ray.remote(num_cpus=1, max_retries=0)(_task)
            try:
                peaks = ray.get([remote.remote(name, shards_ref, i, outs[i], params_ref) for i in todo])
            except ray.exceptions.RayTaskError as e:  # re-raise the task's own one-line error
                raise e.cause if isinstance(e.cause, Exception) else e from None
        self.peak_rss_kib[name] = max([self.peak_rss_kib.get(name, 0), *(peaks if todo else [])])
        return _Reader(folder)


@dataclass
class Threshold:
    key: int | None  # sort key of the rm_ratio quantile cosine (None: nothing dropped)
    drop_ties: int  # pairs with exactly that cosine dropped, the earliest in global order
    ties_before: np.ndarray  # (n_shards,) pairs with that cosine in the shards before each shard
    n_pairs: int
    n_drop: int

    @property
    def cosine(self) -> float | None:
        if self.key is None:
            return None
        k = np.uint32(self.key)
        bits = k & np.uint32(0x7FFFFFFF) if k >> 31 else ~k
        return float(np.array([bits], np.uint32).view(np.float32)[0])

    def as_params(self) -> dict:
        return {"key": self.key, "drop_ties": self.drop_ties}


def noise_threshold(runner: Runner, rm_ratio: float) -> tuple[Threshold, _Reader]:
    """Exact streaming version of pds.cluster.noise_filter: the threshold cosine and the tie rule that drop
    exactly the int(n * rm_ratio) pairs that a stable sort of all cosines puts first."""
    if not 0 <= rm_ratio < 1:
        raise ValueError(f"rm_ratio={rm_ratio} must be in [0, 1): it is the fraction of pairs dropped.")
    cosine = runner.run("cosine", {})
    n_shards = runner.shards.n_shards
    hist = np.zeros(BINS, np.int64)
    for i in range(n_shards):
        hist += cosine(i)["hist"]
    n = int(hist.sum())
    r = int(n * rm_ratio)
    if r == 0:
        return Threshold(None, 0, np.zeros(n_shards, np.int64), n, 0), cosine
    high = int(np.searchsorted(np.cumsum(hist), r))  # first bin whose cumulative count reaches r
    below = int(hist[:high].sum())
    refine = runner.run("refine", {"bin": high, "cosine": cosine}, high, cosine.folder)
    per_shard = [refine(i)["hist"] for i in range(n_shards)]
    low_hist = np.sum(per_shard, axis=0)
    low = int(np.searchsorted(np.cumsum(low_hist), r - below))
    n_less = below + int(low_hist[:low].sum())
    ties = np.array([h[low] for h in per_shard], np.int64)
    ties_before = np.concatenate([[0], np.cumsum(ties)[:-1]]).astype(np.int64)
    return Threshold((high << 16) | low, r - n_less, ties_before, n, r), cosine


@dataclass
class StreamResult:
    """What the streamed cluster + match computed; per-shard labels and members stay in the work folders."""

    threshold: Threshold
    image_centroids: np.ndarray  # (K, d) float32
    text_centroids: np.ndarray  # (K, d) float32
    image_inertia: float
    text_inertia: float
    overlap: np.ndarray  # (K, K) int64
    rows: np.ndarray  # (K,) image clusters
    cols: np.ndarray  # (K,) matched text clusters
    prototypes: match.Prototypes  # members filled only when asked for (they are O(N))
    prompt_caption_ids: np.ndarray  # (M,) int64
    prompt_cosine: np.ndarray  # (M,) float32
    assign: _Reader
    sums: _Reader
    runner: Runner

    def keep(self, n_shards: int) -> np.ndarray:
        return np.concatenate([self.assign(i)["keep"] for i in range(n_shards)])

    def labels(self, name: str, n_shards: int) -> np.ndarray:
        return np.concatenate([self.assign(i)[f"{name}_labels"] for i in range(n_shards)])


def kmeans_sample(shards: Shards, keep_counts: np.ndarray, keep_of, sample_size: int, seed: int):
    """The k-means training sample of each modality, drawn as pds.cluster.sample_rows draws it from the kept
    pairs in pair order: ((s, d), (s, d)) float32 read from the shards."""
    offsets = np.concatenate([[0], np.cumsum(keep_counts)])
    picks = cluster.sample_rows(int(offsets[-1]), sample_size, seed)  # positions among the kept pairs
    out = {"image": [], "text": []}
    for i in range(shards.n_shards):
        local = picks[(picks >= offsets[i]) & (picks < offsets[i + 1])] - offsets[i]
        if not len(local):
            continue
        img, txt, _ = shards.read(i)
        rows = np.flatnonzero(keep_of(i))[local]
        out["image"].append(np.asarray(img[rows], np.float32))
        out["text"].append(np.asarray(txt[rows], np.float32))
    return np.concatenate(out["image"]), np.concatenate(out["text"])


def run_pds(shards: Shards, work_dir, n_clusters: int, rm_ratio: float = 0.2, seed: int = 42,
            centroids: tuple[np.ndarray, np.ndarray] | None = None, sample_size: int = cluster.SAMPLE_SIZE,
            max_iter: int | None = None, empty: str = "centroid", members: bool = False,
            engine: str | None = None) -> StreamResult:
    """Cluster + match streamed over shards. With `centroids` (image (K, d), text (K, d)) they are used as
    given; otherwise faiss k-means on a sample (pds.cluster.faiss_kmeans, the same sample as the in-memory
    `algorithm="faiss"`). Equal to pds.cluster.cluster_pairs(algorithm="faiss") + pds.match on the same pairs
    (see docs/scale.md for the last-bit caveats of float64 sums)."""
    if empty not in match.EMPTY:
        raise ValueError(f"unknown empty={empty!r}; use one of {match.EMPTY}.")
    runner = Runner(shards, Path(work_dir), engine_name(engine))
    threshold, cosine = noise_threshold(runner, rm_ratio)
    n_kept = threshold.n_pairs - threshold.n_drop
    if not 1 <= n_clusters <= n_kept:
        raise ValueError(f"n_clusters={n_clusters} but only {n_kept} of {threshold.n_pairs} pairs remain after "
                         f"dropping rm_ratio={rm_ratio}; lower n_clusters or rm_ratio.")
    if centroids is None:
        def keep_of(i):
            return keep_mask(cosine(i)["key"], threshold.as_params(), int(threshold.ties_before[i]))

        keep_counts = np.array([int(keep_of(i).sum()) for i in range(shards.n_shards)], np.int64)
        start = time.perf_counter()
        sample = kmeans_sample(shards, keep_counts, keep_of, sample_size, seed)
        runner.seconds["sample"] = time.perf_counter() - start
        start = time.perf_counter()
        centroids = tuple(cluster.faiss_train(x, n_clusters, seed, max_iter) for x in sample)
        runner.seconds["kmeans"] = time.perf_counter() - start
    image_c, text_c = (np.ascontiguousarray(c, dtype=np.float32) for c in centroids)
    if image_c.shape != (n_clusters, shards.dim) or text_c.shape != (n_clusters, shards.dim):
        raise ValueError(f"centroids {image_c.shape}, {text_c.shape} must both be ({n_clusters}, {shards.dim}).")
    cluster.check_finite(image_c, "image centroids")
    cluster.check_finite(text_c, "text centroids")
    params = {"cosine": cosine, "threshold": threshold.as_params(), "ties_before": threshold.ties_before,
              "image_centroids": image_c, "text_centroids": text_c}
    assign = runner.run("assign", params, cosine.folder, threshold.as_params(), image_c, text_c)
    k = n_clusters
    overlap = np.zeros(k * k, np.int64)
    image_inertia = text_inertia = 0.0
    for i in range(shards.n_shards):
        a = assign(i)
        np.add.at(overlap, a["codes"], a["counts"])
        image_inertia += float(a["image_inertia"])
        text_inertia += float(a["text_inertia"])
    overlap = overlap.reshape(k, k)
    start = time.perf_counter()
    rows, cols = match.match_clusters(overlap)
    runner.seconds["hungarian"] = time.perf_counter() - start
    slot = np.full(k * k, -1, dtype=np.int64)
    slot[rows * k + cols] = np.arange(len(rows))
    sums = runner.run("sums", {"assign": assign, "slot": slot, "k": k, "m": len(rows)}, assign.folder, rows, cols)
    totals = {"image_sums": 0.0, "text_sums": 0.0, "counts": 0}
    for i in range(shards.n_shards):
        s = sums(i)
        for name in totals:
            totals[name] = totals[name] + s[name]
    protos = _prototypes(totals, rows, cols, image_c, text_c, empty)
    if members:
        protos.members = gather_members(sums, shards.n_shards, protos)
    nearest = runner.run("nearest", {"queries": protos.text}, protos.text)
    best_cos = np.full(len(protos), -np.inf)
    best_id = np.zeros(len(protos), np.int64)
    for i in range(shards.n_shards):  # strict > keeps the earlier shard on ties: lowest global row wins
        r = nearest(i)
        better = r["cosine"] > best_cos
        best_cos = np.where(better, r["cosine"], best_cos)
        best_id = np.where(better, r["caption_id"], best_id)
    return StreamResult(threshold, image_c, text_c, image_inertia, text_inertia, overlap, rows, cols, protos,
                        best_id, best_cos.astype(np.float32), assign, sums, runner)


def _prototypes(totals: dict, rows, cols, image_c, text_c, empty: str) -> match.Prototypes:
    counts = np.asarray(totals["counts"], np.int64)  # (K,)
    mask = np.ones(len(rows), bool) if empty == "centroid" else counts > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.where(counts[:, None] > 0, totals["image_sums"] / counts[:, None], image_c[rows])
        text = np.where(counts[:, None] > 0, totals["text_sums"] / counts[:, None], text_c[cols])
    image, text = image.astype(np.float32)[mask], text.astype(np.float32)[mask]
    return match.Prototypes(image, text, rows[mask], cols[mask], counts[mask], (counts == 0)[mask],
                            [np.zeros(0, np.int64)] * int(mask.sum()), int((counts == 0).sum()))


def gather_members(sums: _Reader, n_shards: int, protos: match.Prototypes) -> list[np.ndarray]:
    """Caption ids of each prototype's intersection (in pair order), as pds.match.Prototypes.members: O(N).
    A member's matched-pair index is its image cluster (the assignment's rows are 0..K-1)."""
    parts = [sums(i) for i in range(n_shards)]
    proto = np.concatenate([p["member_prototype"] for p in parts])
    ids = np.concatenate([p["member_caption_id"] for p in parts])
    order = np.argsort(proto, kind="stable")  # by prototype, pair order inside each
    sorted_proto = proto[order]
    out = []
    for i in protos.image_cluster:
        lo, hi = np.searchsorted(sorted_proto, [i, i + 1])
        out.append(ids[order[lo:hi]])
    return out


# ----------------------------------------------------------------------------------------------------
# artefacts: the match stage's files, from a streamed run


def prompt_captions(shards: Shards, caption_ids: np.ndarray) -> pd.DataFrame:
    """(caption_id, caption) of the given ids, read shard by shard from the metadata (which must have a
    `caption` column): only these rows are kept in memory."""

    wanted = set(np.asarray(caption_ids).tolist())
    found = []
    for i in range(shards.n_shards):
        _, _, meta = shards.read(i)
        if "caption" not in meta.columns:
            raise ValueError(f"shard {i}'s metadata has no `caption` column: the prompts need the caption text.")
        found.append(meta.loc[meta["caption_id"].isin(wanted), ["caption_id", "caption"]])
    return pd.concat(found, ignore_index=True).drop_duplicates("caption_id")


def save_result(out_dir, res: StreamResult, shards: Shards) -> None:
    """Write what the match stage writes (pds.match.save_prototypes: image.npy, text.npy, prompts.parquet,
    members.parquet, overlap.npy, summary.json) plus the centroids, so synthesize reads a streamed run as it
    reads an in-memory one. members.parquet is empty unless the run gathered members (members=True)."""
    protos = res.prototypes
    prompts = match.prompts_table(protos, res.prompt_caption_ids, res.prompt_cosine,
                                  prompt_captions(shards, res.prompt_caption_ids))
    n_kept = res.threshold.n_pairs - res.threshold.n_drop
    summary = match.summarize(protos, res.overlap, n_kept) | {
        "engine": "streamed over shards", "n_pairs": res.threshold.n_pairs, "n_shards": shards.n_shards,
        "noise_threshold_cosine": res.threshold.cosine, "image_inertia": res.image_inertia,
        "text_inertia": res.text_inertia}
    match.save_prototypes(out_dir, protos, prompts, res.overlap, summary)
    data.save_npy(Path(out_dir) / "image_centroids.npy", res.image_centroids)
    data.save_npy(Path(out_dir) / "text_centroids.npy", res.text_centroids)


def main(argv=None) -> None:
    """python -m pds.engine SHARDS WORK OUT --n-clusters M [--rm-ratio 0.2 --seed 42 --sample-size 100000]:
    cluster + match on shards (PDS_ENGINE=local|ray), the match stage's files written to OUT."""
    import argparse

    from pds import shards as shards_module

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("shards")
    p.add_argument("work")
    p.add_argument("out")
    p.add_argument("--n-clusters", type=int, required=True)
    p.add_argument("--rm-ratio", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sample-size", type=int, default=cluster.SAMPLE_SIZE)
    p.add_argument("--members", action="store_true", help="gather each intersection's caption ids (O(N) memory)")
    opts = p.parse_args(argv)
    s = shards_module.open_shards(opts.shards)
    res = run_pds(s, opts.work, opts.n_clusters, opts.rm_ratio, opts.seed, sample_size=opts.sample_size,
                  members=opts.members)
    save_result(opts.out, res, s)
    print(f"wrote {opts.out}: {len(res.prototypes)} prototypes from {res.threshold.n_pairs:,} pairs "
          f"({s.n_shards} shards, PDS_ENGINE={engine_name()})")


if __name__ == "__main__":
    main()
