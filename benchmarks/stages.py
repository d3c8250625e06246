"""Section `stages`: wall time and peak memory of each pipeline stage, as `dvc repro --force --single-item
<stage>` in dvc.yaml order (toy world, the parameters of params.yaml).

By default the stages run in a scratch copy of the working tree (tracked and untracked-but-not-ignored files,
.git, and the inputs of the first stage run that no selected stage produces), so benchmarking never rewrites
this repository's dvc.lock or outputs; `--in-place` runs them here instead. The copy imports its own `pds`
(PYTHONPATH), checked before anything runs. Stages that write under models/ (the committed toy models) are
left out unless named with --stages: retraining them takes long and is not part of a normal `dvc repro`.

Time is the wall time of the whole `dvc repro` command (DVC's own hashing and, for notebook stages, the
papermill kernel start-up included: what a user waits for). Peak memory is the largest max RSS of any single
process in that command's tree (os.wait4 on dvc: every process waited for by its parent is included).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, log, run_command, stats, thread_env


def dvc_stages() -> dict:
    """Stages of dvc.yaml in file order (a topological order: each stage's deps come from earlier ones), a
    `foreach` stage expanded into one `<name>@<key>` stage per entry, as dvc names them."""
    import yaml

    out = {}
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        for key, item in _lookup(stage["foreach"].strip("${}")).items():
            out[f"{name}@{key}"] = _expand(stage["do"], key, item)
    return out


def _lookup(dotted: str):
    from pds import config

    v = config.load()
    for k in dotted.split("."):
        v = v[k]
    return v


def _expand(node, key: str, item: dict):
    """A foreach body with ${key} and ${item.<leaf>} filled in."""
    import re

    if isinstance(node, str):
        node = node.replace("${key}", key)
        return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m[1]]), node)
    if isinstance(node, list):
        return [_expand(v, key, item) for v in node]
    if isinstance(node, dict):
        return {_expand(k, key, item): _expand(v, key, item) for k, v in node.items()}
    return node


def _paths(entries) -> list[str]:
    out = []
    for e in entries or []:
        out.append(next(iter(e)) if isinstance(e, dict) else str(e))
    return out


def _render(path: str) -> str:
    """Resolve `${section.key}` from params.yaml in a dep path (dvc.yaml templating)."""
    import re

    return re.sub(r"\$\{([^}]+)\}", lambda m: str(_lookup(m.group(1))), path)


def select(opts, stages: dict) -> tuple[list[str], dict]:
    """Stages to run and, for those left out, why."""
    names = list(stages)
    skipped = {}
    if opts.stages:
        wanted = [s.strip() for s in opts.stages.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in stages]
        if unknown:
            raise SystemExit(f"unknown dvc stages {unknown}; dvc.yaml has {', '.join(names)}.")
        return [n for n in names if n in wanted], {n: "not selected (--stages)" for n in names if n not in wanted}
    run = []
    dataset = _lookup("base.dataset")
    for name in names:
        outs = [_render(p) for p in _paths(stages[name].get("outs"))]
        if "@" in name and name.split("@", 1)[1] != dataset:
            skipped[name] = f"another world than base.dataset ({dataset}); time it with --stages {name}"
        elif any(o.startswith("models/") for o in outs):
            skipped[name] = ("writes the committed toy models (retraining takes long and is not part of a normal "
                             "repro); time it with --stages " + name)
        else:
            run.append(name)
    return run, skipped


def missing_inputs(run: list[str], stages: dict) -> tuple[list[str], list[str]]:
    """(inputs no selected stage produces, those of them missing on disk)."""
    produced = set()
    external = []
    for name in run:
        for dep in (_render(p) for p in _paths(stages[name].get("deps"))):
            if not any(dep == o or dep.startswith(o.rstrip("/") + "/") for o in produced):
                external.append(dep)
        produced |= {_render(p) for p in _paths(stages[name].get("outs"))}
    external = sorted(set(external))
    return external, [d for d in external if not (ROOT / d).exists()]


def scratch_copy(inputs: list[str]) -> Path:
    """A copy of the working tree (git-visible files + .git + the given inputs) in a temporary folder."""
    dest = Path(tempfile.mkdtemp(prefix="pds-bench-"))
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    shutil.copytree(ROOT / ".git", dest / ".git", symlinks=True)
    for rel in inputs:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, dirs_exist_ok=True, symlinks=True)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def repro_env(workdir: Path, threads: int) -> dict:
    env = thread_env(threads)
    env.pop("TQDM_DISABLE", None)  # stages run as users run them
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(workdir)  # the copy's pds, not the editable install's
    return env


def run(opts) -> dict:
    stages = dvc_stages()
    names, skipped = select(opts, stages)
    if opts.quick and not opts.stages:
        names, skipped = names[:1], skipped | {n: "quick run: first stage only" for n in names[1:]}
    inputs, missing = missing_inputs(names, stages)
    if missing:
        return {"skipped": f"inputs of the first stages are missing ({', '.join(missing)}): run `dvc repro` once "
                           "(or include the stages that make them with --stages)", "stages_skipped": skipped}
    dvc = Path(sys.executable).parent / "dvc"
    if not dvc.exists():
        return {"skipped": f"{dvc} not found: install the environment (make install)."}
    workdir = ROOT if opts.in_place else scratch_copy(inputs)
    env = repro_env(workdir, opts.threads)
    try:
        check = subprocess.run([sys.executable, "-c", "import pds.paths as p; print(p.ROOT)"], cwd=workdir, env=env,
                               capture_output=True, text=True, check=True).stdout.strip()
        if Path(check).resolve() != workdir.resolve():
            raise SystemExit(f"the scratch copy imports pds from {check}, not {workdir}; aborting so the "
                             "repository's outputs are not touched.")
        repeats = opts.stage_repeats
        rows = []
        for name in names:
            runs = []
            for rep in range(repeats):
                r = run_command([str(dvc), "repro", "--force", "--single-item", name], workdir, env)
                runs.append(r)
                log(f"  {name:<14} rep {rep + 1}/{repeats}: {r['process_seconds']:7.1f} s, peak "
                    f"{r['peak_rss_mib']:,.0f} MiB")
            rows.append({"stage": name, "seconds": stats([r["process_seconds"] for r in runs]),
                         "peak_rss_mib": stats([r["peak_rss_mib"] for r in runs]),
                         "cmd": " ".join(str(stages[name]["cmd"]).split())[:200]})
        runs_csv = workdir / "results" / "evaluate" / "runs.csv"
        if "evaluate" in names and runs_csv.is_file():  # the evaluate section reads its per-run times
            from benchmarks.evaluate import STAGE_RUNS

            (ROOT / STAGE_RUNS).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(runs_csv, ROOT / STAGE_RUNS)
            os.utime(ROOT / STAGE_RUNS)
    finally:
        if workdir != ROOT:
            shutil.rmtree(workdir, ignore_errors=True)
    total = sum(r["seconds"]["median"] for r in rows)
    return {"table": rows, "total_seconds": total, "repeats": repeats, "in_place": bool(opts.in_place),
            "stages_skipped": skipped, "threads": opts.threads,
            "note": ("wall time of `dvc repro --force --single-item <stage>` (DVC and papermill start-up included); "
                     "peak = largest max RSS of one process in its tree (os.wait4)"
                     + ("" if repeats >= 3 else f"; {repeats} run(s) per stage: one pass of the whole pipeline "
                        "takes many minutes"))}


PDS_STAGES = ("embed", "cluster", "match", "synthesize")  # what PDS itself costs, from the CLIP embeddings on


def cost_ratio(table: list[dict]) -> list[str]:
    """The optimisation-based baselines' cost against PDS's, from the same run: the tm stage (expert
    trajectories, then MTT-VL and LoRS) vs PDS's embed -> synthesize."""
    by = {r["stage"]: r for r in table}
    if "tm" not in by or not all(k in by for k in PDS_STAGES):
        return []
    pds = sum(by[k]["seconds"]["median"] for k in PDS_STAGES)
    pds_peak = max(by[k]["peak_rss_mib"]["median"] for k in PDS_STAGES)
    tm = by["tm"]
    return [f"\nTrajectory matching vs PDS, same run: `tm` (expert trajectories, then MTT-VL and LoRS) "
            f"{tm['seconds']['median']:,.0f} s at peak {tm['peak_rss_mib']['median']:,.0f} MiB against PDS's embed -> "
            f"synthesize {pds:,.0f} s at peak {pds_peak:,.0f} MiB: **{tm['seconds']['median'] / pds:.1f}x** the time "
            "(toy scale; both exclude the students that evaluate them)."]


def markdown(section: dict) -> str:
    if "skipped" in section:
        return f"*Pipeline stages: skipped ({section['skipped']})*\n"
    from benchmarks.common import fmt, threads_text

    n = section["repeats"]
    lines = [f"**Pipeline stages** (toy world, `dvc repro --force --single-item <stage>`, "
             f"{threads_text(section['threads'])} (OMP/BLAS/torch, PDS_NUM_THREADS), "
             f"{n} run{'s' if n > 1 else ''} per stage{'' if n >= 3 else ' — one pass of the pipeline takes minutes'})",
             "", "| stage | wall time (s) | peak memory (MiB) |", "|---|---|---|"]
    for r in section["table"]:
        lines.append(f"| {r['stage']} | {fmt(r['seconds'])} | {fmt(r['peak_rss_mib'])} |")
    lines.append(f"| **total** | {section['total_seconds']:,.0f} | |")
    lines += cost_ratio(section["table"])
    reasons = {}
    for name, why in section.get("stages_skipped", {}).items():
        reasons.setdefault(why, []).append(f"`{name}`")
    for why, names in reasons.items():
        lines.append(f"\nNot timed: {', '.join(names)} ({why}).")
    return "\n".join(lines) + "\n"
