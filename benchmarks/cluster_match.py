"""Benchmark of the cluster + match stages on synthetic CLIP-sized embeddings (not a test).

    python benchmarks/cluster_match.py                        # Flickr30k size, M = 100, reference + fast
    python benchmarks/cluster_match.py --sizes flickr,coco --m 100,500 --configs reference,mb1,mb3,lloyd1
    python benchmarks/cluster_match.py --sizes coco --m 500 --configs reference --ref-n-init 1 --threads 1

Sizes: flickr = 145,000 training pairs (29,000 images x 5 captions), coco = 570,000 (114,000 x 5), d = 768,
like Karpathy's splits embedded with CLIP ViT-L/14. The data are gaussian topic blobs: each image belongs to
one of `--topics` topics, its 5 captions to the same topic plus a modality offset, every vector unnormalised
with CLIP-like norms. The pipeline is the stages' own code: pair cosine + noise filter, k-means on each
modality, overlap matrix + Hungarian + prototypes, and caption retrieval over all training captions.

Each configuration runs in a fresh subprocess, so its peak memory is its own: `peak_rss` is the process's
high-water mark (getrusage ru_maxrss, which sees sklearn's C/OpenMP buffers that tracemalloc would miss) and
`overhead` is peak_rss minus the resident size once the input arrays were built, i.e. what clustering and
matching add on top of holding the embeddings. Quality: k-means inertia (sum over both modalities) relative
to the reference configuration of the same size and M, on the same data.

`--ref-n-init R` (R < 20) runs the reference with R initialisations only and extrapolates its time to 20
(labelled `extrapolated`): in MiniBatchKMeans the n_init initialisations are independent k-means++ runs on
`3 * batch_size` rows, timed here one by one, while the mini-batch loop runs once whatever n_init is. The
inertia of such a run is then that of R initialisations, not of the reference.
Writes results/benchmarks/cluster_match.json (merged with earlier runs: one record per size/M/config).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"flickr": 145_000, "coco": 570_000}
# name -> (algorithm, n_init, batch_size); "reference" is PDS's MiniBatchKMeans(batch_size=10000, n_init=20)
CONFIGS = {
    "reference": ("minibatch", 20, 10000),
    "mb3": ("minibatch", 3, 10000),
    "mb1": ("minibatch", 1, 10000),
    "mb1_b30k": ("minibatch", 1, 30000),
    "lloyd1": ("kmeans", 1, 10000),
}


def synthetic_pairs(n_pairs: int, d: int = 768, topics: int = 1000, captions_per_image: int = 5, seed: int = 0):
    """(image_pairs (n, d), text_pairs (n, d)) float32 built without (n, d) temporaries beyond the outputs."""
    rng = np.random.default_rng(seed)
    n_images = n_pairs // captions_per_image
    centres = rng.standard_normal((topics, d), dtype=np.float32) * 0.6  # (T, d)
    topic = rng.integers(0, topics, n_images)  # (n_images,)
    images = centres[topic] + rng.standard_normal((n_images, d), dtype=np.float32)  # (n_images, d)
    images += rng.standard_normal(d, dtype=np.float32) * 0.5  # CLIP embeddings are not centred
    image_of_pair = np.repeat(np.arange(n_images), captions_per_image)
    image_pairs = images[image_of_pair]  # (n, d): each image repeated once per caption, as in the stage
    text_pairs = centres[topic[image_of_pair]]  # (n, d)
    gap = rng.standard_normal(d, dtype=np.float32) * 0.5  # modality gap
    for i in range(0, n_pairs, 65536):
        block = text_pairs[i:i + 65536]
        block += gap + rng.standard_normal(block.shape, dtype=np.float32)
    return image_pairs, text_pairs


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def init_seconds(x: np.ndarray, n_clusters: int, batch_size: int, seed: int) -> float:
    """Time of one MiniBatchKMeans initialisation: k-means++ on 3 * batch_size rows + its validation inertia."""
    from sklearn.cluster import kmeans_plusplus
    from sklearn.metrics import pairwise_distances_argmin_min

    rng = np.random.default_rng(seed)
    sub = x[rng.integers(0, len(x), min(3 * batch_size, len(x)))]
    t = time.perf_counter()
    centres, _ = kmeans_plusplus(sub, n_clusters, random_state=seed)
    pairwise_distances_argmin_min(sub, centres)
    return time.perf_counter() - t


def run_one(n_pairs: int, m: int, algorithm: str, n_init: int, batch_size: int, seed: int, topics: int,
            d: int, extrapolate_to: int) -> dict:
    """One configuration, in this (fresh) process: the stages' own functions, timed phase by phase."""
    from pds import cluster, match

    image_pairs, text_pairs = synthetic_pairs(n_pairs, d, topics, seed=seed)
    caption_ids = np.arange(n_pairs)
    base = rss_bytes()
    times = {}
    t0 = time.perf_counter()
    cos = cluster.pair_cosine(image_pairs, text_pairs)
    keep = cluster.noise_filter(cos, 0.2)
    times["filter"] = time.perf_counter() - t0
    fits = {}
    for name, x in (("image", image_pairs), ("text", text_pairs)):
        t = time.perf_counter()
        fits[name] = cluster.kmeans(x[keep], m, seed, algorithm, batch_size, n_init)
        times[f"kmeans_{name}"] = time.perf_counter() - t
    t = time.perf_counter()
    overlap = match.overlap_matrix(fits["image"][0], fits["text"][0], m)
    rows, cols = match.match_clusters(overlap)
    protos = match.prototypes(image_pairs[keep], text_pairs[keep], caption_ids[keep], fits["image"][0],
                              fits["text"][0], rows, cols, fits["image"][1], fits["text"][1])
    times["match"] = time.perf_counter() - t
    t = time.perf_counter()
    match.retrieve_captions(protos.text, text_pairs)
    times["retrieve"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    out = {"n_pairs": n_pairs, "n_kept": int(keep.sum()), "d": d, "m": m, "algorithm": algorithm,
           "n_init": n_init, "batch_size": batch_size, "seconds": total, "phases": times,
           "inertia": fits["image"][2] + fits["text"][2], "inertia_image": fits["image"][2],
           "inertia_text": fits["text"][2], "n_empty": protos.n_empty,
           "peak_rss_gib": peak_rss_bytes() / 2**30, "overhead_gib": (peak_rss_bytes() - base) / 2**30,
           "input_gib": (image_pairs.nbytes + text_pairs.nbytes) / 2**30}
    if extrapolate_to > n_init:
        per_init = init_seconds(image_pairs[keep], m, batch_size, seed)  # same size for either modality
        out["init_seconds_each"] = per_init
        out["extrapolated_n_init"] = extrapolate_to
        out["extrapolated_seconds"] = total + 2 * (extrapolate_to - n_init) * float(per_init)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="flickr", help="comma-separated: flickr, coco, or a number of pairs")
    p.add_argument("--m", default="100", help="comma-separated numbers of clusters / prototypes")
    p.add_argument("--configs", default="reference,mb3,mb1,lloyd1", help=f"comma-separated of {list(CONFIGS)}")
    p.add_argument("--ref-n-init", type=int, default=20, help="n_init actually run for `reference` (< 20: "
                   "time extrapolated to 20, see the module docstring)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--topics", type=int, default=1000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=0, help="OpenMP/BLAS threads per run (0: library default, "
                   "all cores); use 1 on a shared machine, where busy-waiting OpenMP threads oversubscribe")
    p.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "cluster_match.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:  # one configuration, in a fresh process; prints one JSON line
        print(json.dumps(run_one(**json.loads(args.child))))
        return

    out = Path(args.out)
    records = json.loads(out.read_text())["runs"] if out.exists() else []
    for size in args.sizes.split(","):
        n_pairs = SIZES[size] if size in SIZES else int(size)
        for m in map(int, args.m.split(",")):
            for name in args.configs.split(","):
                algorithm, n_init, batch_size = CONFIGS[name]
                extrapolate_to = 0
                if name == "reference" and args.ref_n_init < n_init:
                    extrapolate_to, n_init = n_init, args.ref_n_init
                for rep in range(args.repeats):
                    spec = {"n_pairs": n_pairs, "m": m, "algorithm": algorithm, "n_init": n_init,
                            "batch_size": batch_size, "seed": args.seed, "topics": args.topics, "d": args.dim,
                            "extrapolate_to": extrapolate_to}
                    load = os.getloadavg()[0]
                    env = os.environ | ({f"{v}_NUM_THREADS": str(args.threads) for v in ("OMP", "OPENBLAS", "MKL")}
                                        if args.threads else {})
                    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], cwd=ROOT,
                                         env=env, capture_output=True, text=True, check=True)
                    rec = json.loads(res.stdout.strip().splitlines()[-1])
                    rec |= {"size": size, "config": name, "repeat": rep, "load_before": load,
                            "cpus": os.cpu_count(), "threads": args.threads or os.cpu_count()}
                    key = ("size", "m", "config", "n_init", "repeat")
                    records = [r for r in records if tuple(r[k] for k in key) != tuple(rec[k] for k in key)] + [rec]
                    print(f"{size:>7} M={m:<4} {name:<10} n_init={rec['n_init']:<3} {rec['seconds']:8.1f} s"
                          + (f" (-> {rec['extrapolated_seconds']:.0f} s at n_init={extrapolate_to})"
                             if extrapolate_to else "")
                          + f"  peak {rec['peak_rss_gib']:5.2f} GiB (+{rec['overhead_gib']:.2f})"
                          + f"  inertia {rec['inertia']:.4g}  empty {rec['n_empty']}", flush=True)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps({"runs": records}, indent=1) + "\n")
    print_table(records)


def print_table(records):
    """Markdown table; inertia ratio vs the reference of the same size and M (full n_init only)."""
    ref = {(r["size"], r["m"]): r["inertia"] for r in records
           if r["config"] == "reference" and not r.get("extrapolated_n_init")}
    print("\n| size | pairs | M | config | algorithm | n_init | batch | time (s) | peak RSS (GiB) | "
          "added (GiB) | inertia / ref | empty |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(records, key=lambda r: (r["n_pairs"], r["m"], list(CONFIGS).index(r["config"]), -r["n_init"])):
        t = f"{r['seconds']:.0f}"
        if r.get("extrapolated_n_init"):
            t += f" (n_init={r['n_init']}; ≈{r['extrapolated_seconds']:.0f} extrapolated to 20)"
        ratio = ref.get((r["size"], r["m"]))
        ratio = f"{r['inertia'] / ratio:.4f}" if ratio else "—"
        print(f"| {r['size']} | {r['n_pairs']:,} | {r['m']} | {r['config']} | {r['algorithm']} | {r['n_init']} | "
              f"{r['batch_size']} | {t} | {r['peak_rss_gib']:.2f} | {r['overhead_gib']:.2f} | {ratio} | "
              f"{r['n_empty']} |")


if __name__ == "__main__":
    main()
