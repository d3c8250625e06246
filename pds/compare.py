"""Compare two metrics.json files within a tolerance: the reproducibility check of docs/reproducibility.md.

    python -m pds.compare results/evaluate/metrics.json other/metrics.json --tol 0.1
    python -m pds.compare results/evaluate/metrics.json --against HEAD   # the committed figures

On one machine (same CPU family and thread count) a rerun gives byte-identical artefacts and equal metrics;
across CPU families the float results differ in the last bits, and the metrics agree within about 0.1 r_mean.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from pds import paths

KEYS = ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "r_mean")
ROW_ID = ("protocol", "method", "image_encoder", "selected_on")


def _rows(metrics: dict, name: str) -> dict[tuple, dict]:
    rows = {}
    for r in metrics.get("results", []):
        key = tuple(r.get(k, "field" if k == "protocol" else None) for k in ROW_ID)  # before protocols: field
        if key in rows:
            raise ValueError(f"{name} lists {dict(zip(ROW_ID, key, strict=True))} twice.")
        rows[key] = r
    return rows


def compare_metrics(a: dict, b: dict, tol: float = 0.1, keys=KEYS, names=("a", "b")) -> list[str]:
    """Every difference between two metrics.json contents: another dataset / budget / seed count, a row
    (protocol, method, image_encoder, selected_on) present in one only, or a recall differing by more than
    `tol` points. An empty list means they agree."""
    out = [f"{k}: {a.get(k)!r} in {names[0]}, {b.get(k)!r} in {names[1]}"
           for k in ("dataset", "n_pairs", "seeds") if a.get(k) != b.get(k)]
    ra, rb = _rows(a, names[0]), _rows(b, names[1])
    for key in ra.keys() - rb.keys():
        out.append(f"{'/'.join(map(str, key))}: only in {names[0]}")
    for key in rb.keys() - ra.keys():
        out.append(f"{'/'.join(map(str, key))}: only in {names[1]}")
    for key in [k for k in ra if k in rb]:
        for k in keys:
            d = abs(float(ra[key][k]) - float(rb[key][k]))
            if d > tol + 1e-9:  # the figures are rounded to 0.01: 30.1 - 30.0 is not above 0.1
                out.append(f"{'/'.join(map(str, key))} {k}: {ra[key][k]} vs {rb[key][k]} (|diff| {d:.2f} > {tol})")
    return out


def committed(path: Path, rev: str) -> dict:
    """metrics.json as committed at git revision `rev`."""
    rel = path.resolve().relative_to(paths.ROOT)
    done = subprocess.run(["git", "show", f"{rev}:{rel.as_posix()}"], cwd=paths.ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise FileNotFoundError(f"git show {rev}:{rel} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Compare two metrics.json files within a tolerance.")
    p.add_argument("metrics", help="a metrics.json, e.g. results/evaluate/metrics.json")
    p.add_argument("other", nargs="?", help="the metrics.json to compare with")
    p.add_argument("--against", metavar="REV", help="compare with `metrics` as committed at this git revision")
    p.add_argument("--tol", type=float, default=0.1, help="largest accepted difference in recall points")
    args = p.parse_args(argv)
    if (args.other is None) == (args.against is None):
        p.error("give either a second metrics.json or --against REV.")
    path = paths.resolve(args.metrics)
    a = json.loads(path.read_text())
    if args.against:
        b, names = committed(path, args.against), (str(args.metrics), f"{args.against}:{args.metrics}")
    else:
        b, names = json.loads(paths.resolve(args.other).read_text()), (str(args.metrics), str(args.other))
    diffs = compare_metrics(a, b, args.tol, names=names)
    for line in diffs:
        print(line)
    n = len(_rows(a, names[0]))
    print(f"{'DIFFER' if diffs else 'agree'}: {len(diffs)} difference(s) beyond {args.tol} over {n} rows "
          f"({names[0]} vs {names[1]})")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
