"""faiss k-means on a sample (cluster.algorithm faiss) against the reference MiniBatchKMeans (batch 10,000,
n_init 20) on the cluster benchmark's synthetic data: 145,000 image embeddings x 768 (Flickr30k's size), K = 100,
seed 0, one thread each. Inertia over all rows (pds.cluster.inertia), lower is better.

    OMP_NUM_THREADS=1 python benchmarks/faiss_inertia.py results/scale/faiss_inertia.json
"""

import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.cluster import synthetic_pairs  # noqa: E402
from pds import cluster, data  # noqa: E402


def main(out_path: str) -> None:
    img, _ = synthetic_pairs(145_000)
    out = {"n": len(img), "d": img.shape[1], "k": 100, "seed": 0, "faiss_sample_size": 100_000}
    for name, kw in (("faiss", {"algorithm": "faiss", "sample_size": 100_000}),
                     ("minibatch_n_init_20", {"algorithm": "minibatch", "batch_size": 10000, "n_init": 20})):
        start = time.perf_counter()
        _, _, inertia = cluster.kmeans(img, 100, 0, **kw)
        out[name] = {"seconds": time.perf_counter() - start, "inertia": inertia}
    out["ratio_faiss_over_minibatch"] = out["faiss"]["inertia"] / out["minibatch_n_init_20"]["inertia"]
    data.save_json(out_path, out)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
