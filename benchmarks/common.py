"""Machinery shared by the benchmark sections: child processes with their own peak memory, thread settings,
robust statistics and a description of the machine.

Every measured configuration runs in a fresh child process (`run_child`), so its peak memory is its own:
`peak_rss_mib` is the child's `ru_maxrss` as returned by `os.wait4` for that child alone. On Linux this is
the high-water resident set of the largest single process among the child and the descendants it waited
for (DataLoader workers, a papermill kernel), not their sum; it sees C / OpenMP / BLAS buffers that
tracemalloc would miss.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"
MARKER = "BENCHMARK-RESULT "  # prefix of the one stdout line a child returns its result on
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "PDS_NUM_THREADS")
VERSIONS = ("numpy", "scipy", "scikit-learn", "torch", "torchvision", "open_clip_torch", "diffusers", "transformers",
            "timm", "pandas", "dvc", "papermill", "threadpoolctl")


def thread_env(threads: int) -> dict[str, str]:
    """Environment for a child: `threads` OpenMP/BLAS/torch threads, no progress bars, no DVC analytics."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.update({k: str(threads) for k in THREAD_VARS})
    env.update(TQDM_DISABLE="1", DVC_NO_ANALYTICS="1", PYTHONHASHSEED="0", PYTHONUNBUFFERED="1")
    return env


def run_child(target: str, spec: dict, threads: int, extra_env: dict | None = None) -> dict:
    """Run `benchmarks.<module>.<function>(spec)` (target "module:function") in a fresh Python process with
    `threads` threads and `extra_env` (a None value removes that variable). Returns its result dict plus
    `peak_rss_mib` and `process_seconds` (the whole child, imports included)."""
    cmd = [sys.executable, str(RUN), "--child", target, json.dumps(spec)]
    env = thread_env(threads) | (extra_env or {})
    env = {k: v for k, v in env.items() if v is not None}
    return _measure(cmd, env, ROOT, parse=True)  # its stderr shows live


def run_command(cmd: list[str], cwd, env: dict) -> dict:
    """Run any command; returns {"seconds": wall, "peak_rss_mib": ..., "returncode": ...}; output discarded
    unless it fails (then its tail is raised)."""
    return _measure(cmd, env, cwd, parse=False)


def _measure(cmd, env, cwd, parse: bool) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        # a child's stderr (its progress lines) passes through; a command's is kept for the error message
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=None if parse else err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (and its waited-for descendants')
        proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it has been reaped
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((stdout + stderr).strip().splitlines()[-25:])
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)[:300]}\n{tail}")
    result = {}
    if parse:
        lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
        if not lines:
            raise RuntimeError(f"child printed no result: {' '.join(cmd)[:300]}\n{stderr[-2000:]}")
        result = json.loads(lines[-1][len(MARKER):])
    peak = usage.ru_maxrss / 1024  # Linux reports KiB
    return result | {"peak_rss_mib": round(peak, 1), "process_seconds": round(seconds, 3)}


def child_main(target: str, spec_json: str) -> None:
    """Entry point inside a child: call the section function and print its result on the marker line."""
    import importlib

    module, function = target.split(":")
    result = getattr(importlib.import_module(f"benchmarks.{module}"), function)(json.loads(spec_json))
    print(MARKER + json.dumps(result), flush=True)


def stats(values) -> dict:
    """Median, min, max and count of some measurements (the figures the tables show), and the values."""
    v = sorted(float(x) for x in values)
    if not v:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "n": len(v), "values": v}


def ratio_stats(numerators, denominators) -> dict:
    """Stats of per-repeat ratios a_i / b_i (measured side by side in the same repeat)."""
    return stats([a / b for a, b in zip(numerators, denominators, strict=True)])


def fmt(s: dict | None, digits: int = 3, unit: str = "") -> str:
    """`median (min–max)` of a stats dict, with `n=` when fewer than 3 runs."""
    if not s or s.get("median") is None:
        return "—"

    def f(x):
        return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"

    text = f"{f(s['median'])}{unit}"
    if s["n"] > 1:
        text += f" ({f(s['min'])}–{f(s['max'])})"
    if s["n"] < 3:
        text += f" [n={s['n']}]"
    return text


def _meminfo_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        return None
    return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def other_busy_cores(seconds: float = 1.0) -> float | None:
    """CPU cores kept busy by other processes, sampled while the harness sleeps: unlike the load average it
    does not count the harness's own previous section."""
    try:
        b0, t0 = _cpu_jiffies()
        time.sleep(seconds)
        b1, t1 = _cpu_jiffies()
    except (OSError, ValueError, IndexError):
        return None
    return round((b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1), 2)  # /proc/stat sums over all CPUs


def machine_info(threads: int) -> dict:
    """What the figures were measured on, including how busy the machine was when the section started."""
    cpus = os.cpu_count() or 1
    load = os.getloadavg()
    others = other_busy_cores()
    return {
        "cpu": cpu_model(),
        "logical_cpus": cpus,
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus,
        "ram_gib": _meminfo_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "device": os.environ.get("PDS_DEVICE", "cpu"),
        "threads": threads,
        "thread_env": {k: str(threads) for k in THREAD_VARS},
        "versions": versions(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "load_average_1m_at_start": round(load[0], 2),
        "other_busy_cores_at_start": others,
        # other work running: timings are not final figures
        "busy_at_start": others > 0.25 if others is not None else load[0] > 0.5 * cpus,
    }


def threadpools() -> list[dict]:
    """The thread pools a child actually runs with (threadpoolctl), to record next to its timings."""
    from threadpoolctl import threadpool_info

    return [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads")} for p in threadpool_info()]


def threads_text(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def save_figure(fig, name: str) -> str:
    """Write `fig` to results/benchmarks/<name> and close it; the path relative to the repository."""
    import matplotlib.pyplot as plt

    path = ROOT / "results" / "benchmarks" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path.relative_to(ROOT))


def log(message: str) -> None:
    print(message, flush=True)
