"""Compare two metrics.json files within a tolerance: the reproducibility check across CPU families.

    python -m studies.compare results/evaluate/metrics.json other/metrics.json --tol 0.1
    python -m studies.compare results/evaluate/metrics.json --against HEAD   # the committed figures

`dvc metrics diff` lists every change; this says whether the changes stay within a tolerance. On one machine
(same CPU family and thread count) a rerun gives byte-identical artefacts and equal metrics; across CPU families
the float results differ in the last bits, and the metrics agree within about 0.1 r_mean.
"""

import argparse
import json
import sys

from pds import paths

KEYS = ("IR@1", "IR@5", "IR@10", "TR@1", "TR@5", "TR@10", "r_mean")
HEADER = ("dataset", "n_pairs", "seeds")


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """Every leaf of a metrics tree under its dotted path, as `dvc metrics show` names them."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def compare_metrics(a: dict, b: dict, tol: float = 0.1, keys=KEYS, names=("a", "b")) -> list[str]:
    """Every difference between two metrics trees: another dataset / budget / seed count, a figure present in one
    only, or a recall (`keys`) differing by more than `tol` points. An empty list means they agree."""
    la, lb = leaves(a), leaves(b)
    out = [f"{k}: {a.get(k)!r} in {names[0]}, {b.get(k)!r} in {names[1]}" for k in HEADER if a.get(k) != b.get(k)]
    out += [f"{k}: only in {names[0]}" for k in la if k not in lb and k not in HEADER]
    out += [f"{k}: only in {names[1]}" for k in lb if k not in la and k not in HEADER]
    for k in [k for k in la if k in lb and k.rsplit(".", 1)[-1] in keys]:
        d = abs(float(la[k]) - float(lb[k]))
        if d > tol + 1e-9:  # the figures are rounded to 0.01: 30.1 - 30.0 is not above 0.1
            out.append(f"{k}: {la[k]} vs {lb[k]} (|diff| {d:.2f} > {tol})")
    return out


def committed(path, rev: str) -> dict:
    """metrics.json as committed at git revision `rev` (DVC's API reads it from git)."""
    import dvc.api

    rel = paths.resolve(path).relative_to(paths.ROOT).as_posix()
    try:
        return json.loads(dvc.api.read(rel, repo=str(paths.ROOT), rev=rev))
    except Exception as err:  # dvc raises several kinds: name the file and the revision instead
        raise FileNotFoundError(f"{rel} at revision {rev}: {err}") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Compare two metrics.json files within a tolerance.")
    p.add_argument("metrics", help="a metrics.json, e.g. results/evaluate/metrics.json")
    p.add_argument("other", nargs="?", help="the metrics.json to compare with")
    p.add_argument("--against", metavar="REV", help="compare with `metrics` as committed at this git revision")
    p.add_argument("--tol", type=float, default=0.1, help="largest accepted difference in recall points")
    args = p.parse_args(argv)
    if (args.other is None) == (args.against is None):
        p.error("give either a second metrics.json or --against REV.")
    a = json.loads(paths.resolve(args.metrics).read_text())
    if args.against:
        b, names = committed(args.metrics, args.against), (str(args.metrics), f"{args.against}:{args.metrics}")
    else:
        b, names = json.loads(paths.resolve(args.other).read_text()), (str(args.metrics), str(args.other))
    diffs = compare_metrics(a, b, args.tol, names=names)
    for line in diffs:
        print(line)
    n = sum(k.endswith(".r_mean") for k in leaves(a))
    print(f"{'DIFFER' if diffs else 'agree'}: {len(diffs)} difference(s) beyond {args.tol} over {n} r_means "
          f"({names[0]} vs {names[1]})")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
