"""Section `cluster`: the cluster + match stages at dataset scale on synthetic CLIP-sized embeddings.

N training pairs (10k, 50k, 145k = Flickr30k, 570k = COCO) x d = 768, M = 100 and 500 clusters. The data are
gaussian topic blobs: each image belongs to one of 1,000 topics, its 5 captions to the same topic plus a
modality offset, every vector unnormalised with CLIP-like norms. The pipeline is the stages' own code: pair
cosine + noise filter (rm_ratio 0.2), k-means on each modality, overlap matrix + Hungarian + prototypes, and
caption retrieval over all training captions.

Settings: `reference` = PDS's MiniBatchKMeans(batch_size=10000, n_init=20); `fast` = the same with n_init=1.
In MiniBatchKMeans the n_init initialisations are independent k-means++ runs on init_size = 3 x batch_size
rows (at most the data), each scored on init_size validation rows; the mini-batch loop then runs once from the
best. So reference time = fast time + 2 modalities x 19 extra initialisations, and where the reference is not
measured (it takes ~20 min per COCO-size run on 2 cores) it is **extrapolated** from the fast run and the
measured time of one initialisation (`init` children), labelled as such. Where the reference is measured,
the table also shows the extrapolation next to it, as a check of that model.

Each (N, M, setting) run is a fresh child process: its peak RSS includes the input arrays (`input_mib`);
`added` is the peak minus the resident size once the inputs were built. The runs of one (N, M) alternate
fast / reference, so their time and inertia ratios are side by side.
"""

import math
import os
import resource
import time

from benchmarks.common import fmt, log, run_child, save_figure, stats, threadpools

RM_RATIO = 0.2
BATCH = 10_000
SETTINGS = {"reference": 20, "fast": 1}  # n_init


def synthetic_pairs(n_pairs: int, d: int = 768, topics: int = 1000, captions_per_image: int = 5, seed: int = 0):
    """(image_pairs (n, d), text_pairs (n, d)) float32 built without (n, d) temporaries beyond the outputs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_images = math.ceil(n_pairs / captions_per_image)
    centres = rng.standard_normal((topics, d), dtype=np.float32) * 0.6  # (T, d)
    topic = rng.integers(0, topics, n_images)  # (n_images,)
    images = centres[topic] + rng.standard_normal((n_images, d), dtype=np.float32)  # (n_images, d)
    images += rng.standard_normal(d, dtype=np.float32) * 0.5  # CLIP embeddings are not centred
    image_of_pair = np.repeat(np.arange(n_images), captions_per_image)[:n_pairs]
    image_pairs = images[image_of_pair]  # (n, d): each image repeated once per caption, as in the stage
    text_pairs = centres[topic[image_of_pair]]  # (n, d)
    gap = rng.standard_normal(d, dtype=np.float32) * 0.5  # modality gap
    for i in range(0, n_pairs, 65536):
        block = text_pairs[i:i + 65536]
        block += gap + rng.standard_normal(block.shape, dtype=np.float32)
    return image_pairs, text_pairs


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_fit(spec: dict) -> dict:
    """One configuration in this fresh process: the stages' functions, timed step by step."""
    import numpy as np

    from pds import cluster, match

    n, m, n_init = spec["n_pairs"], spec["m"], spec["n_init"]
    image_pairs, text_pairs = synthetic_pairs(n, spec["d"], seed=spec["seed"])
    caption_ids = np.arange(n)
    base = _rss_bytes()
    times = {}
    t0 = time.perf_counter()
    cos = cluster.pair_cosine(image_pairs, text_pairs)
    keep = cluster.noise_filter(cos, RM_RATIO)
    times["filter"] = time.perf_counter() - t0
    fits = {}
    for name, x in (("image", image_pairs), ("text", text_pairs)):
        t = time.perf_counter()
        fits[name] = cluster.kmeans(x[keep], m, spec["seed"], "minibatch", BATCH, n_init)
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
    return {"seconds": time.perf_counter() - t0, "phases": times, "n_kept": int(keep.sum()),
            "inertia": fits["image"][2] + fits["text"][2], "n_empty": int(protos.n_empty),
            "input_mib": (image_pairs.nbytes + text_pairs.nbytes) / 2**20,
            "added_mib": (_peak_rss_bytes() - base) / 2**20, "threadpools": threadpools()}


def child_init(spec: dict) -> dict:
    """Seconds of one MiniBatchKMeans initialisation for each (rows, M) in spec["cases"], `repeats` times:
    k-means++ on `rows` rows plus the labels / inertia of `rows` validation rows (the work each of the n_init
    initialisations does, with init_size = rows)."""
    import numpy as np
    from sklearn.cluster import kmeans_plusplus
    from sklearn.metrics import pairwise_distances_argmin_min

    biggest = max(rows for rows, _ in spec["cases"])
    x = synthetic_pairs(math.ceil(biggest / (1 - RM_RATIO)), spec["d"], seed=spec["seed"])[0]  # (n, d)
    rng = np.random.default_rng(spec["seed"])
    out = {}
    for rows, m in spec["cases"]:
        times = []
        for rep in range(spec["repeats"]):
            sub = x[rng.integers(0, rows, rows)]
            valid = x[rng.integers(0, rows, rows)]
            t = time.perf_counter()
            centres, _ = kmeans_plusplus(sub, m, random_state=spec["seed"] + rep)
            pairwise_distances_argmin_min(valid, centres)
            times.append(time.perf_counter() - t)
        out[f"{m}:{rows}"] = times
    return {"seconds": out}


def plan(opts):
    if opts.quick:
        return {"sizes": [1000, 2000, 4000], "ms": [10, 20], "reference": {(1000, 10): 1}, "repeats": 1,
                "big": 10**9, "d": 768}
    reference = {}
    for item in opts.cluster_reference.split(","):
        if item.strip():
            n, m, r = (int(v) for v in item.split(":"))
            reference[(n, m)] = r
    return {"sizes": [int(v) for v in opts.cluster_sizes.split(",")], "ms": [int(v) for v in opts.cluster_m.split(",")],
            "reference": reference, "repeats": opts.repeats, "big": opts.cluster_big, "d": 768}


def init_rows(n_pairs: int) -> int:
    return min(3 * BATCH, n_pairs - int(n_pairs * RM_RATIO))


def run(opts) -> dict:
    p = plan(opts)
    seed = 42
    runs = []  # one record per child

    def fit(n, m, setting, rep):
        spec = {"n_pairs": n, "m": m, "n_init": SETTINGS[setting], "d": p["d"], "seed": seed}
        r = run_child("cluster:child_fit", spec, opts.threads) | {"n_pairs": n, "m": m, "setting": setting,
                                                                    "repeat": rep}
        runs.append(r)
        log(f"  N={n:>7,} M={m:<4} {setting:<9} rep {rep + 1}: {r['seconds']:7.1f} s, peak "
            f"{r['peak_rss_mib'] / 1024:5.2f} GiB, inertia {r['inertia']:.5g}")

    for n in p["sizes"]:
        for m in p["ms"]:
            n_fast = p["repeats"] if n <= p["big"] else 1
            n_ref = p["reference"].get((n, m), 0)
            for rep in range(max(n_fast, n_ref)):  # alternate, so the ratios are side by side
                if rep < n_fast:
                    fit(n, m, "fast", rep)
                if rep < n_ref:
                    fit(n, m, "reference", rep)
    # one initialisation, for the reference runs not measured (and those measured, as a check)
    cases = sorted({(init_rows(n), m) for n in p["sizes"] for m in p["ms"]})
    r = run_child("cluster:child_init", {"cases": cases, "d": p["d"], "seed": seed, "repeats": p["repeats"]},
                  opts.threads)
    init = {key: stats(v) for key, v in r["seconds"].items()}
    for key, v in init.items():
        m, rows = key.split(":")
        log(f"  one initialisation, M={m} on {int(rows):,} rows: {fmt(v)} s")

    table = []
    for n in p["sizes"]:
        for m in p["ms"]:
            fast = [r for r in runs if (r["n_pairs"], r["m"], r["setting"]) == (n, m, "fast")]
            ref = [r for r in runs if (r["n_pairs"], r["m"], r["setting"]) == (n, m, "reference")]
            per_init = init[f"{m}:{init_rows(n)}"]["median"]
            fast_t = stats([r["seconds"] for r in fast])
            row = {"n_pairs": n, "m": m, "n_kept": fast[0]["n_kept"], "fast_seconds": fast_t,
                   "fast_peak_mib": stats([r["peak_rss_mib"] for r in fast]),
                   "fast_added_mib": stats([r["added_mib"] for r in fast]), "input_mib": fast[0]["input_mib"],
                   "fast_phases": {k: stats([r["phases"][k] for r in fast]) for k in fast[0]["phases"]},
                   "fast_n_empty": fast[0]["n_empty"],
                   "reference_extrapolated_seconds": fast_t["median"] + 2 * (SETTINGS["reference"] - 1) * per_init,
                   "init_seconds": per_init}
            if ref:
                pairs = list(zip(fast, ref, strict=False))  # same repeat index: measured side by side
                row |= {"reference_seconds": stats([r["seconds"] for r in ref]),
                        "reference_peak_mib": stats([r["peak_rss_mib"] for r in ref]),
                        "speedup": stats([r["seconds"] / f["seconds"] for f, r in pairs]),
                        "inertia_ratio_fast_over_reference": stats([f["inertia"] / r["inertia"] for f, r in pairs]),
                        "reference_n_empty": ref[0]["n_empty"]}
            table.append(row)
    slopes = {}
    for m in p["ms"]:
        pts = [(r["n_pairs"], r["fast_seconds"]["median"]) for r in table if r["m"] == m]
        if len(pts) >= 2:
            import numpy as np

            slope, intercept = np.polyfit(np.log10([a for a, _ in pts]), np.log10([b for _, b in pts]), 1)
            slopes[str(m)] = {"slope": float(slope), "intercept": float(intercept)}
    out = {"settings": {"sizes": p["sizes"], "ms": p["ms"], "d": p["d"], "rm_ratio": RM_RATIO, "batch_size": BATCH,
                        "n_init": SETTINGS, "repeats": p["repeats"], "fast_repeats_above": p["big"],
                        "reference_measured": {f"{n}:{m}": r for (n, m), r in p["reference"].items()},
                        "seed": seed, "topics": 1000},
           "table": table, "init": init, "loglog_slope_fast": slopes, "runs": runs,
           "threadpools": runs[0]["threadpools"] if runs else [],
           "note": ("reference time where not measured = fast median + 2 x 19 x one initialisation (median): "
                    "extrapolated; inertia = sum of both modalities' k-means inertia; peak = child max RSS "
                    "including the input arrays")}
    out["plot"] = plot(out, "quick_cluster_scaling.png" if opts.quick else "cluster_scaling.png")
    return out


def plot(section: dict, name: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, m in enumerate(section["settings"]["ms"]):
        rows = [r for r in section["table"] if r["m"] == m]
        n = np.array([r["n_pairs"] for r in rows])
        med = np.array([r["fast_seconds"]["median"] for r in rows])
        err = np.array([[r["fast_seconds"]["median"] - r["fast_seconds"]["min"],
                         r["fast_seconds"]["max"] - r["fast_seconds"]["median"]] for r in rows]).T
        colour = f"C{i}"
        fit = section["loglog_slope_fast"].get(str(m))
        label = f"fast (n_init 1), M={m}" + (f": slope {fit['slope']:.2f}" if fit else "")
        ax.errorbar(n, med, yerr=err, fmt="o", color=colour, label=label, capsize=3)
        if fit:
            xs = np.geomspace(n.min(), n.max(), 50)
            ax.plot(xs, 10 ** (fit["intercept"] + fit["slope"] * np.log10(xs)), "-", color=colour, lw=1)
        ref = [(r["n_pairs"], r["reference_seconds"]["median"]) for r in rows if "reference_seconds" in r]
        if ref:
            ax.plot(*zip(*ref, strict=True), "s", color=colour, ms=8, label=f"reference (n_init 20), M={m}: measured")
        ax.plot(n, [r["reference_extrapolated_seconds"] for r in rows], "s--", color=colour, mfc="none", lw=0.8,
                label=f"reference, M={m}: extrapolated")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.6g}")
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    ax.set_xlabel("training pairs N (d = 768)")
    ax.set_ylabel("cluster + match time (s)")
    ax.set_title("cluster + match scaling (median, min–max bars)")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, name)


def markdown(section: dict) -> str:
    s = section["settings"]
    lines = [f"**Cluster + match at scale** (synthetic embeddings, d = {s['d']}, noise filter {s['rm_ratio']}, "
             f"MiniBatchKMeans batch {s['batch_size']}; reference n_init {s['n_init']['reference']}, fast n_init "
             f"{s['n_init']['fast']}; time = filter + k-means on both modalities + matching + caption retrieval; "
             "peak = child's max RSS incl. the input embeddings)", "",
             "| N pairs | M | fast time (s) | fast peak (GiB) | reference time (s) | reference / fast time | "
             "inertia fast / reference |", "|---|---|---|---|---|---|---|"]
    for r in section["table"]:
        if "reference_seconds" in r:
            ref = f"{fmt(r['reference_seconds'])} (extrapolation: {r['reference_extrapolated_seconds']:,.0f})"
            speed, inertia = fmt(r["speedup"]), fmt(r["inertia_ratio_fast_over_reference"], 4)
        else:
            ref = f"≈ {r['reference_extrapolated_seconds']:,.0f} *extrapolated*"
            speed = f"≈ {r['reference_extrapolated_seconds'] / r['fast_seconds']['median']:.1f} *extrapolated*"
            inertia = "not measured"
        peak = r["fast_peak_mib"] | {k: r["fast_peak_mib"][k] / 1024 for k in ("median", "min", "max")}
        lines.append(f"| {r['n_pairs']:,} | {r['m']} | {fmt(r['fast_seconds'])} | {fmt(peak, 2)} | {ref} | "
                     f"{speed} | {inertia} |")
    slopes = ", ".join(f"M={m}: {v['slope']:.2f}" for m, v in section["loglog_slope_fast"].items())
    lines += ["", f"Log-log slope of fast time against N: {slopes} (plot: `{section['plot']}`). Extrapolated "
              "reference = fast + 2 modalities x 19 extra initialisations x the measured time of one (k-means++ "
              "on min(30,000, kept pairs) rows + scoring as many validation rows)."]
    return "\n".join(lines) + "\n"
