"""Does PDS give the same distilled set on L2-normalised float16 embeddings (what clip-retrieval writes) as on
the raw float32 embeddings of the embed stage? Runs cluster + match (the stages' own code and params) on:

    raw32   raw float32 (today's input, the reference)
    raw16   raw, rounded to float16
    unit32  L2-normalised, float32
    unit16  L2-normalised, float16 (clip-retrieval's output)
    seed    raw float32 with base.seed + 1: the run-to-run scale of change, to read the others against

and compares each with raw32: prototypes are put in correspondence by the Hungarian assignment on the cosine of
the image prototypes; then the cosine of corresponding image / text prototypes, the Jaccard overlap of their
intersections (caption-id sets), the adjusted Rand index of the pairs' intersection ids (unmatched pairs one
class), kept pairs, matched pairs and identical prompt captions. `fixed_centroids` holds k-means fixed (the
float32 run's centroids, every kept float16 pair assigned to its nearest), so only the data's rounding acts.

    python benchmarks/precision.py --embeddings build/embeddings/toyflickr --out results/scale/precision_toyflickr.json
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])


def run_pds(img, txt, caption_ids, n_clusters, rm_ratio, seed, algorithm, batch_size, n_init, empty,
            centroids=None):
    from pds import cluster, match

    if centroids is None:
        cl = cluster.cluster_pairs(img, txt, n_clusters, rm_ratio, seed, algorithm, batch_size, n_init)
    else:  # the reference's centroids, every kept pair assigned to its nearest: only the data's rounding differs
        keep = cluster.noise_filter(cluster.pair_cosine(img, txt), rm_ratio)
        cl = cluster.Clusters(keep, cluster.assign(img[keep], centroids[0]), cluster.assign(txt[keep], centroids[1]),
                              centroids[0], centroids[1], 0.0, 0.0)
    keep = cl.keep
    ov = match.overlap_matrix(cl.image_labels, cl.text_labels, n_clusters)
    rows, cols = match.match_clusters(ov)
    protos = match.prototypes(img[keep], txt[keep], caption_ids[keep], cl.image_labels, cl.text_labels, rows, cols,
                              cl.image_centroids, cl.text_centroids, empty)
    prompt_rows, _ = match.retrieve_captions(protos.text, txt)
    return {"keep": keep, "protos": protos, "prompts": caption_ids[prompt_rows],
            "centroids": (cl.image_centroids, cl.text_centroids)}


def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def compare(ref, other, caption_ids) -> dict:
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score

    a, b = ref["protos"], other["protos"]
    sim = unit(a.image) @ unit(b.image).T  # (M, M')
    r, c = linear_sum_assignment(sim, maximize=True)
    image_cos = np.einsum("ij,ij->i", unit(a.image[r]), unit(b.image[c]))
    text_cos = np.einsum("ij,ij->i", unit(a.text[r]), unit(b.text[c]))
    jac = []
    for i, j in zip(r, c, strict=True):
        x, y = set(a.members[i].tolist()), set(b.members[j].tolist())
        jac.append(len(x & y) / len(x | y) if x | y else 1.0)

    def intersection_of(p):  # caption id -> prototype index, -1 for pairs in no matched intersection
        lab = np.full(caption_ids.max() + 1, -1, np.int64)
        for m, ids in enumerate(p.members):
            lab[ids] = m
        return lab[caption_ids]

    return {"image_proto_cosine": {"mean": float(image_cos.mean()), "min": float(image_cos.min())},
            "text_proto_cosine": {"mean": float(text_cos.mean()), "min": float(text_cos.min())},
            "intersection_jaccard": {"mean": float(np.mean(jac)), "min": float(np.min(jac))},
            "pair_ari": float(adjusted_rand_score(intersection_of(a), intersection_of(b))),
            "keep_agreement": float((ref["keep"] == other["keep"]).mean()),
            "matched_pairs": [int(a.overlap.sum()), int(b.overlap.sum())],
            "same_prompt_caption": float(np.mean(ref["prompts"][r] == other["prompts"][c]))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", required=True, help="the embed stage's output folder")
    p.add_argument("--out", required=True)
    opts = p.parse_args(argv)
    import yaml

    from pds import cluster, data, embed

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    emb = embed.load_embeddings(opts.embeddings)
    img, txt, caption_ids, _ = cluster.train_pairs(emb.image, emb.text, emb.captions)
    c = params["cluster"]
    settings = {"n_clusters": params["base"]["n_pairs"], "rm_ratio": c["rm_ratio"], "algorithm": c["algorithm"],
                "batch_size": c["batch_size"], "n_init": c["n_init"], "empty": params["match"]["empty"]}
    seed = params["base"]["seed"]

    def go(i, t, s=seed, centroids=None):
        return run_pds(np.asarray(i, np.float32), np.asarray(t, np.float32), caption_ids, settings["n_clusters"],
                       settings["rm_ratio"], s, settings["algorithm"], settings["batch_size"], settings["n_init"],
                       settings["empty"], centroids)

    ref = go(img, txt)
    unit_ref = go(unit(img), unit(txt))
    # rounding alone, k-means held fixed: float16 data assigned to the float32 run's centroids
    fixed = {"raw16_same_centroids": compare(ref, go(img.astype(np.float16), txt.astype(np.float16),
                                                      centroids=ref["centroids"]), caption_ids),
             "unit16_vs_unit32_same_centroids": compare(unit_ref, go(unit(img).astype(np.float16),
                                                                     unit(txt).astype(np.float16),
                                                                     centroids=unit_ref["centroids"]), caption_ids)}
    variants = {"raw16": (img.astype(np.float16), txt.astype(np.float16), seed),
                "unit32": (unit(img), unit(txt), seed),
                "unit16": (unit(img).astype(np.float16), unit(txt).astype(np.float16), seed),
                "seed": (img, txt, seed + 1)}
    out = {"embeddings": opts.embeddings, "n_pairs": len(img), "dim": img.shape[1], "seed": seed, **settings,
           "norms": {"image_mean": float(np.linalg.norm(img, axis=1).mean()),
                     "text_mean": float(np.linalg.norm(txt, axis=1).mean())},
           "vs_raw32": {name: compare(ref, go(i, t, s), caption_ids) for name, (i, t, s) in variants.items()},
           "fixed_centroids": fixed}
    data.save_json(opts.out, out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
