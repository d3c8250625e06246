"""Section `scale`: PDS's cluster + match streamed over shards (pds.engine) from 10^5 to 4 x 10^6 pairs.

Data: generated clustered embeddings (1,000 topics; each image's 5 captions share its topic; a modality offset;
d = 768), written once as L2-normalised float16 shards of 50,000 pairs in clip-retrieval's layout, as
clip-retrieval writes them. A size N reads the first N / 50,000 shards (a manifest per N; the files are shared).

Each (N, engine) is one child process running `pds.engine.run_pds` end to end: noise-filter threshold (exact,
two histogram passes), faiss k-means on a 100,000-pair sample per modality (k-means++ seeds), assignment +
sparse counts, Hungarian, prototype sums, nearest caption. `local` = the passes in one loop in the child (one
BLAS thread); `ray` = a local Ray cluster with PDS_NUM_WORKERS = --threads workers (1 BLAS thread each), started
by the child (start-up and worker warm-up reported apart). faiss on the sample runs in the driver with one
thread in both. pairs/s per core = N / pass seconds / cores the pass used (1 local, the workers on Ray).
Peak memory: the child's ru_maxrss (the driver) and, for Ray, the largest worker's ru_maxrss (workers are not
the child's waited-for descendants, so they report their own); the shared-memory object store is not counted.
Every configuration runs once (n=1): the largest takes minutes; the machine's cores are shared with other work,
recorded in the section's `machine` and `other_busy_cores_at_end`.
"""

import hashlib
import json
import os
import shutil
import time

from benchmarks.common import ROOT, log, run_child, save_figure

SHARD = 50_000
TOPICS = 1000
K = 256
SAMPLE = 100_000


def generate(spec: dict) -> dict:
    """Write spec['n_shards'] shards of float16 unit rows under spec['dir'] (skipping shards already there)."""
    import numpy as np
    import pandas as pd

    from pds import data, shards

    d, root, per = spec["d"], ROOT / spec["dir"], spec["shard"]
    done = root / "entries.json"
    if done.exists() and len(json.loads(done.read_text())) >= spec["n_shards"]:
        return {"n_shards": spec["n_shards"]}  # written (and hashed) by an earlier run
    rng = np.random.default_rng(spec["seed"])
    centres = rng.standard_normal((TOPICS, d), dtype=np.float32) * 0.6  # (T, d)
    offset = rng.standard_normal(d, dtype=np.float32) * 0.5  # CLIP embeddings are not centred
    gap = rng.standard_normal(d, dtype=np.float32) * 0.5  # modality gap
    entries = []
    for i in range(spec["n_shards"]):
        paths = shards.shard_paths(root, i)
        if not all(p.exists() for p in paths.values()):
            r = np.random.default_rng([spec["seed"], i])  # one stream per shard: smaller N are prefixes
            n_images = per // 5
            topic = r.integers(0, TOPICS, n_images)
            images = centres[topic] + offset + r.standard_normal((n_images, d), dtype=np.float32)
            img = np.repeat(images, 5, axis=0)  # (per, d)
            txt = centres[np.repeat(topic, 5)] + gap + r.standard_normal((per, d), dtype=np.float32)
            for key, x in (("img_emb", img), ("text_emb", txt)):
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                data.save_npy(paths[key], x.astype(np.float16))
            ids = np.arange(i * per, (i + 1) * per, dtype=np.int64)
            data.save_table(paths["metadata"], pd.DataFrame({"caption_id": ids, "image_id": ids // 5}))
        entries.append(shards._entry(root, i, paths, per))
    data.save_json(root / "entries.json", entries)
    return {"n_shards": len(entries)}


def make_root(base, n_shards: int, d: int):
    """A folder whose manifest lists the first n_shards shards of `base` (links to its files)."""
    from pds import data

    root = base.parent / f"n{n_shards}"
    entries = json.loads((base / "entries.json").read_text())[:n_shards]
    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for e in entries:
        for key in ("img_emb", "text_emb", "metadata"):
            link = root / e[key]["name"]
            if not link.exists():
                link.symlink_to(base / e[key]["name"])
    data.save_json(root / "manifest.json", {"format": "clip-retrieval", "dim": d, "dtype": "float16",
                                            "normalized": True, "rows": n_shards * SHARD, "shards": entries})
    return root


def child_run(spec: dict) -> dict:
    """One end-to-end streamed run; returns seconds and peak memory per pass and a digest of the outputs."""
    import resource

    import numpy as np

    from pds import engine, shards

    s = shards.open_shards(spec["root"])
    start = time.perf_counter()
    ray_start = 0.0
    if spec["engine"] == "ray":
        ray = engine.init_ray()
        # start every worker and import the passes' modules there, so pass times exclude process start-up
        warm = ray.remote(num_cpus=1)(_warm_up)
        ray.get([warm.remote() for _ in range(int(ray.cluster_resources()["CPU"]))])
        ray_start = time.perf_counter() - start
    work = ROOT / spec["work"]
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    res = engine.run_pds(s, work, spec["k"], 0.2, seed=0, sample_size=spec["sample"], engine=spec["engine"])
    seconds = time.perf_counter() - t0
    digest = hashlib.sha256()
    for a in (res.prototypes.image, res.prototypes.text, res.overlap, res.prompt_caption_ids, res.prompt_cosine,
              res.image_centroids, res.text_centroids):
        digest.update(np.ascontiguousarray(a).tobytes())
    shutil.rmtree(work, ignore_errors=True)
    return {"seconds": seconds, "ray_start_seconds": ray_start, "passes": res.runner.seconds,
            "worker_peak_mib": max(res.runner.peak_rss_kib.values()) / 1024,
            "driver_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "digest": digest.hexdigest(), "n_empty": res.prototypes.n_empty,
            "matched_fraction": float(res.prototypes.overlap.sum() / (res.threshold.n_pairs - res.threshold.n_drop))}


def _warm_up() -> None:
    import time as _time

    from pds import engine  # noqa: F401

    _time.sleep(0.5)  # hold the CPU so each warm-up task lands on its own worker


def run(opts) -> dict:
    sizes = [int(float(x)) for x in opts.scale_sizes.split(",")]
    shard = 2_000 if opts.quick else SHARD
    if opts.quick:
        sizes = [4_000, 8_000]
    d = 64 if opts.quick else 768
    k, sample = (16, 2_000) if opts.quick else (K, SAMPLE)
    scratch = ROOT / "build" / ("scale_quick" if opts.quick else "scale")
    base = scratch / "shards"
    n_max = max(sizes) // shard
    log(f"   generating {n_max} shards x {shard:,} pairs x {d} (float16) under {base.relative_to(ROOT)}")
    t = time.perf_counter()
    run_child("scale:generate", {"dir": str(base.relative_to(ROOT)), "n_shards": n_max, "shard": shard, "d": d,
                                 "seed": 0}, opts.threads)
    generate_seconds = time.perf_counter() - t
    workers = opts.threads
    table = []
    # rows measured by an interrupted earlier run with the same settings are kept, not re-measured (n=1 each)
    partial = scratch / "rows.json"
    key = {"shard": shard, "d": d, "k": k, "sample": sample, "workers": workers}
    done = json.loads(partial.read_text()) if partial.exists() else {}
    done = {int(n): r for n, r in done.get("rows", {}).items()} if done.get("key") == key else {}
    for n in sizes:
        if n in done:
            log(f"   N={n:,}: measured by an earlier run ({done[n]['local']['seconds']:.0f} s / "
                f"{done[n]['ray']['seconds']:.0f} s), kept")
            table.append(done[n])
            continue
        root = make_root(base, n // shard, d)
        row = {"n_pairs": n, "n_shards": n // shard}
        for name in ("local", "ray"):
            env = {"PDS_ENGINE": name, "PDS_NUM_WORKERS": str(workers), "RAY_ADDRESS": None}
            # the driver (faiss on the sample) runs with one thread in both: OpenMP with 2 threads on 2 shared cores
            # stalled at its barriers (k-means 2-3x slower than on one thread here); shard tasks use one each
            r = run_child("scale:child_run", {"root": str(root), "engine": name, "k": k, "sample": sample,
                                              "work": str((scratch / f"work_{name}").relative_to(ROOT))},
                          1, env)
            cores = 1 if name == "local" else workers
            r["pairs_per_s_per_core"] = {p: n / s / cores for p, s in r["passes"].items()
                                         if p in ("cosine", "assign", "sums", "nearest")}
            r["pairs_per_s"] = n / r["seconds"]
            row[name] = r
            log(f"   N={n:,} {name}: {r['seconds']:.1f} s, driver {r['driver_peak_mib']:.0f} MiB, workers "
                f"{r['worker_peak_mib']:.0f} MiB")
        row["identical"] = row["local"]["digest"] == row["ray"]["digest"]
        row["ray_speedup"] = row["local"]["seconds"] / row["ray"]["seconds"]
        table.append(row)
        done[n] = row
        partial.write_text(json.dumps({"key": key, "rows": {str(m): r for m, r in done.items()}}))
    out = {"settings": {"sizes": sizes, "shard": shard, "d": d, "k": k, "sample": sample, "rm_ratio": 0.2,
                        "dtype": "float16, L2-normalised", "topics": TOPICS, "ray_workers": workers, "repeats": 1},
           "generate_seconds": generate_seconds, "table": table,
           "note": ("n=1 per configuration; cores shared with other work (see machine.other_busy_cores_at_start); "
                    "peak = ru_maxrss of the driver child and of the largest Ray worker; the object store's shared "
                    "memory is not counted")}
    out["plot"] = plot(out, "quick_scale.png" if opts.quick else "scale.png")
    if not opts.quick and not os.environ.get("PDS_SCALE_KEEP"):
        shutil.rmtree(scratch, ignore_errors=True)  # ~12 GB at 4 x 10^6 pairs
    return out


def plot(section: dict, name: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = section["table"]
    n = [r["n_pairs"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for i, eng in enumerate(("local", "ray")):
        a.plot(n, [r[eng]["seconds"] for r in rows], "o-", color=f"C{i}", label=f"{eng}: cluster + match")
        b.plot(n, [r[eng]["driver_peak_mib"] / 1024 for r in rows], "o-", color=f"C{i}", label=f"{eng}: driver")
        if eng == "ray":
            b.plot(n, [r[eng]["worker_peak_mib"] / 1024 for r in rows], "s--", color=f"C{i}", label="ray: largest worker")
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_xlabel(f"pairs N (d = {section['settings']['d']}, float16 shards)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    a.set_yscale("log")
    a.set_ylabel("wall time (s)")
    a.set_title("streamed cluster + match")
    b.set_ylabel("peak RSS (GiB)")
    b.set_ylim(bottom=0)
    b.set_title("peak memory against N")
    fig.tight_layout()
    return save_figure(fig, name)


def markdown(section: dict) -> str:
    s = section["settings"]
    lines = [f"**Streamed cluster + match over shards** (pds.engine; {s['dtype']} shards of {s['shard']:,} pairs, "
             f"d = {s['d']}, K = {s['k']}, faiss k-means on {s['sample']:,} sampled pairs; local = one loop on one "
             f"core, ray = local Ray cluster with {s['ray_workers']} workers; n=1 each; cores shared with other "
             "work)", "",
             "| N pairs | local (s) | ray (s) | ray speed-up | local pairs/s/core: cosine, assign, sums, nearest | "
             "ray pairs/s/core: same | peak local (MiB) | peak ray driver / worker (MiB) | identical |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in section["table"]:
        lo, ra = r["local"], r["ray"]

        def rates(x):
            return ", ".join(f"{x['pairs_per_s_per_core'][p]:,.0f}" for p in ("cosine", "assign", "sums", "nearest"))

        lines.append(f"| {r['n_pairs']:,} | {lo['seconds']:.1f} | {ra['seconds']:.1f} (+{ra['ray_start_seconds']:.0f} "
                     f"start) | {r['ray_speedup']:.2f} | {rates(lo)} | {rates(ra)} | {lo['driver_peak_mib']:,.0f} | "
                     f"{ra['driver_peak_mib']:,.0f} / {ra['worker_peak_mib']:,.0f} | {'yes' if r['identical'] else 'NO'} |")
    made = (f"Generating the shards took {section['generate_seconds']:.0f} s." if section["generate_seconds"] > 5 else
            "The shards were generated (and hashed) by an earlier, interrupted run of this section and reused.")
    lines += ["", f"Plot: `{section['plot']}`. {made} Ray at the same speed as the loop means its 2 workers did not get "
              "2 free cores: see `other processes busy` below."]
    return "\n".join(lines) + "\n"
