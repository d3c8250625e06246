"""Benchmark harness (not part of the test suite): measures the pipeline on this machine and writes
results/benchmarks.json, plots under results/benchmarks/ and a summary.md ready for docs/benchmarks.md.

    python benchmarks/run.py                                  # everything (make bench), see below
    python benchmarks/run.py --only embed,cluster --quick     # smoke run, < 1 min
    python benchmarks/run.py --summary                        # re-print the tables from the json

Sections (`--only`, comma-separated, run in this order):
  stages      wall time and peak memory of each `dvc repro --force --single-item <stage>` (toy world)
  embed       embed-stage throughput / bare CLIP forward throughput (images and captions)
  cluster     cluster + match at N = 10k..570k pairs x d = 768, M = 100 / 500; reference vs fast k-means
  synthesize  toy decoder images/s batched vs one per call; real decoder time per image, extrapolated
  evaluate    one student training run per image encoder and method
  students    student throughput: field protocol with the previous vs today's code, paper protocol, captions/s
  scale       cluster + match streamed over float16 shards (pds.engine), N = 10^5..4 x 10^6, local loop vs Ray

Every figure is the median of `--repeats` runs (default 3) with min-max, unless its table says n=1 and why;
ratios are taken per repeat from measurements made side by side in the same run. Each configuration runs
in a child process with `--threads` OpenMP/BLAS/torch threads (default: all usable cores), whose peak RSS
is its own (see benchmarks/common.py). A `--quick` run writes results/benchmarks/quick.json instead, so a
smoke run never overwrites the real figures. Run it on a quiet machine: each section records how many cores
other processes kept busy when it started and ended, and the summary flags a busy machine.

Duration on a quiet 2-core machine (estimates): stages one pipeline pass, ~15-20 min (mostly the evaluate
stage's 45 students, whose own run times then serve the evaluate section for free); embed ~2 min; cluster
~10-13 min; synthesize ~5 min (the real-decoder UNet at 96x96 latents dominates); evaluate ~0 (or ~25 min
with --eval-measure); scale ~20 min (generating 12 GB of shards, then 4 x 2 end-to-end runs; needs ~13 GB of disk).
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import `benchmarks` and `pds` from the repository root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import common  # noqa: E402

SECTIONS = ("stages", "embed", "cluster", "synthesize", "evaluate", "students", "scale")
RESULTS = common.ROOT / "results"


def section_module(name: str):
    import importlib

    return importlib.import_module(f"benchmarks.{name}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections to run")
    p.add_argument("--quick", action="store_true", help="tiny sizes and repeats: a smoke run (< 1 min for "
                   "embed,cluster); writes results/benchmarks/quick.json")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure (median, min-max)")
    p.add_argument("--threads", type=int, default=0, help="threads per child process (0: all usable cores)")
    p.add_argument("--out", help="json to write/merge (default results/benchmarks.json, quick: "
                   "results/benchmarks/quick.json)")
    p.add_argument("--summary", action="store_true", help="only print the tables of the existing json")
    g = p.add_argument_group("stages")
    g.add_argument("--stages", default="", help="comma-separated dvc stages (default: every stage of dvc.yaml "
                   "except those writing models/, whose training is the committed toy models)")
    g.add_argument("--stage-repeats", type=int, default=1, help="forced repros of each stage (one run of the "
                   "whole pipeline takes minutes; 1 by default, stated in the table)")
    g.add_argument("--in-place", action="store_true", help="repro in this repository (rewrites dvc.lock and "
                   "the outputs) instead of in a scratch copy of the working tree")
    g = p.add_argument_group("embed")
    g.add_argument("--embed-images", type=int, default=4096, help="images per timed call (captions: 5x)")
    g = p.add_argument_group("cluster")
    g.add_argument("--cluster-sizes", default="10000,50000,145000,570000", help="numbers of training pairs N")
    g.add_argument("--cluster-m", default="100,500", help="numbers of clusters M")
    g.add_argument("--cluster-reference", default="10000:100:3,145000:100:1",
                   help="reference runs actually measured, as N:M:repeats (others are extrapolated)")
    g.add_argument("--cluster-big", type=int, default=200_000, help="N above which the fast setting runs "
                   "once instead of --repeats times (its runs take minutes)")
    g = p.add_argument_group("synthesize")
    g.add_argument("--synth-images", type=int, default=32, help="toy images per timed configuration")
    g.add_argument("--synth-batch", type=int, default=16, help="batch size of the batched configuration")
    g.add_argument("--synth-steps", type=int, default=25, help="denoising steps of the toy decoder")
    g.add_argument("--real-latent", type=int, default=96, help="latent side for the real-decoder UNet "
                   "(96 = its default 768x768 output); smaller sizes are scaled by pixel count, labelled")
    g = p.add_argument_group("evaluate")
    g.add_argument("--eval-encoders", default="convnet,resnet,vit")
    g.add_argument("--eval-methods", default="pds,random,herding,kcenter,full")
    g.add_argument("--eval-measure", action="store_true", help="measure student runs directly instead of reading "
                   "the evaluate stage's own run times (slow: ~30-60 s per run)")
    g = p.add_argument_group("scale")
    g.add_argument("--scale-sizes", default="100000,250000,1000000,4000000", help="numbers of pairs N (multiples of "
                   "50,000; the shards, ~3 GB per 10^6 pairs, go to build/scale and are removed afterwards)")
    p.add_argument("--child", nargs=2, metavar=("TARGET", "SPEC"), help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    opts.started = time.time()  # files written after this come from this run of the harness
    if opts.threads <= 0:
        opts.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return opts


def default_out(opts) -> Path:
    if opts.out:
        return Path(opts.out)
    return RESULTS / "benchmarks" / "quick.json" if opts.quick else RESULTS / "benchmarks.json"


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"sections": {}}


def save_results(path: Path, results: dict) -> None:
    from pds import data

    data.save_json(path, results, indent=1)


def summary_markdown(results: dict) -> str:
    """The performance page (docs/benchmarks.md): the machine, then one table per section that was run."""
    parts = ["## Performance", ""]
    machines = {json.dumps({k: s["machine"].get(k) for k in ("cpu", "usable_cpus", "ram_gib", "device")}, sort_keys=True)
                for s in results["sections"].values() if "machine" in s}
    for m in sorted(machines):
        m = json.loads(m)
        device = "no GPU" if m.get("device", "cpu") == "cpu" else f"PDS_DEVICE={m['device']}"
        parts.append(f"Measured on {m['cpu']}, {m['usable_cpus']} usable CPU cores, {m['ram_gib']} GiB RAM, {device} "
                     "(`make bench` = `python benchmarks/run.py`; raw figures in `results/benchmarks.json`).")
    busy = [n for n, s in results["sections"].items() if s.get("machine", {}).get("busy_at_start")]
    if busy:
        parts.append(f"**The machine was busy with other work when {', '.join(busy)} ran: those timings are not "
                     "final.**")
    for name in SECTIONS:
        if name in results["sections"]:
            sec = results["sections"][name]
            parts += ["", section_module(name).markdown(sec)]
            m = sec.get("machine", {})
            if m:
                parts.append(f"<sub>{name}: {m['date']}, {common.threads_text(m['threads'])}, torch "
                             f"{m['versions'].get('torch', '?')}, scikit-learn {m['versions'].get('scikit-learn', '?')}, "
                             f"other processes busy on {m.get('other_busy_cores_at_start', '?')} cores at start, "
                             f"{sec.get('other_busy_cores_at_end', '?')} at the end"
                             f"{'; quick smoke run' if sec.get('quick') else ''}.</sub>")
    return "\n".join(parts) + "\n"


def main(argv=None) -> None:
    opts = parse_args(argv)
    if opts.child:
        common.child_main(*opts.child)
        return
    out = default_out(opts)
    results = load_results(out)
    if not opts.summary:
        only = [s.strip() for s in opts.only.split(",") if s.strip()]
        unknown = [s for s in only if s not in SECTIONS]
        if unknown:
            raise SystemExit(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}.")
        for name in [s for s in SECTIONS if s in only]:
            common.log(f"== {name}" + (" (quick)" if opts.quick else ""))
            machine = common.machine_info(opts.threads)
            start = time.perf_counter()
            section = section_module(name).run(opts)
            section |= {"machine": machine, "quick": opts.quick,
                        "harness_seconds": round(time.perf_counter() - start, 1),
                        "other_busy_cores_at_end": common.other_busy_cores()}
            if "skipped" in section:
                common.log(f"   skipped: {section['skipped']}")
            results["sections"][name] = section
            save_results(out, results)  # after every section: an interrupted run keeps what it measured
            common.log(f"   {name}: {section['harness_seconds']:.0f} s")
    text = summary_markdown(results)
    # results/benchmarks.json -> results/benchmarks/summary.md; any other json -> the same name, .md
    md = RESULTS / "benchmarks" / "summary.md" if out == RESULTS / "benchmarks.json" else out.with_suffix(".md")
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)
    print("\n" + text)
    print(f"wrote {out.relative_to(common.ROOT) if out.is_relative_to(common.ROOT) else out} and {md.name}")


if __name__ == "__main__":
    main()
