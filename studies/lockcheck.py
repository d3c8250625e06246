"""CI's drift check: every stage recorded in a dvc.lock must match the committed code, notebooks, models and
parameters it depends on, so that a fresh clone reruns nothing whose inputs did not change.

    python -m studies.lockcheck            # dvc.yaml and studies/dvc.yaml; exit 1 with one line per drift

It reads `dvc status` and keeps what git tracks: a dependency tracked by git that differs from the lock, a
changed parameter or command. Outputs and untracked dependencies (data/ made by earlier stages, absent from a
fresh clone) are left to `dvc repro`. Stages never run (no lock entry yet) are listed, not failed.
"""

import json
import subprocess
import sys

import yaml

from pds import paths

PIPELINES = ("dvc.yaml", "studies/dvc.yaml")


def tracked(path: str) -> bool:
    done = subprocess.run(["git", "ls-files", "--", path], cwd=paths.ROOT, capture_output=True, text=True)
    return bool(done.stdout.strip())


def locked_stages(pipeline: str) -> set[str]:
    lock = paths.ROOT / pipeline.replace("dvc.yaml", "dvc.lock")
    return set((yaml.safe_load(lock.read_text()) or {}).get("stages", {})) if lock.is_file() else set()


def drift(status: dict, locked: set[str], prefix: str = "") -> tuple[list[str], list[str]]:
    """(drifts, never run) from `dvc status --json` of one pipeline: a drift is a locked stage whose command,
    parameters or git-tracked dependencies changed."""
    out, never = [], []
    for name, changes in status.items():
        stage = name.split(":", 1)[-1]
        if stage not in locked:
            never.append(prefix + stage)
            continue
        for change in changes:
            if change == "changed command":
                out.append(f"{prefix}{stage}: its command differs from the lock")
            elif isinstance(change, dict):
                for dep, what in change.get("changed deps", {}).items():
                    if what == "modified" and tracked(dep.split("/", 1)[1] if dep.startswith("../") else dep):
                        out.append(f"{prefix}{stage}: {dep} differs from the lock")
                for file, params in change.get("changed params", {}).items():
                    out.append(f"{prefix}{stage}: parameters of {file} differ from the lock ({', '.join(params)})")
    return out, never


def main() -> int:
    problems, never = [], []
    for pipeline in PIPELINES:
        done = subprocess.run([sys.executable, "-m", "dvc", "status", "--json", pipeline], cwd=paths.ROOT,
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(f"dvc status {pipeline} failed: {done.stderr.strip()}", file=sys.stderr)
            return 1
        d, n = drift(json.loads(done.stdout or "{}"), locked_stages(pipeline),
                     "" if pipeline == "dvc.yaml" else f"{pipeline}:")
        problems += d
        never += n
    for line in problems:
        print(line)
    if never:
        print(f"not yet run under DVC (no lock entry): {', '.join(never)}")
    print(f"lockcheck: {'DRIFT' if problems else 'ok'} ({len(problems)} stage input(s) differ from their lock)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
