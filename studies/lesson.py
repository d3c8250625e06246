"""The classroom preset: the five lessons on a small toy world of their own (1,000 training images, 200 val,
200 test; M = 20 pairs, k-means n_init 1; students: one seed, 20 epochs), with the HTML book of the executed
lessons. Everything is written under --out (default build/lesson): raw/toyworld, embeddings, clusters,
prototypes, synthetic, text_features, evaluate, notebooks/ (the executed lessons), book/ and parameters.json
(each notebook's parameters here, which `make lab` then hands the notebooks opened in JupyterLab);
data/ and results/ are never read or written (models/ is read: the committed toy models).

    python -m studies.lesson --out build/lesson       (dvc repro studies/dvc.yaml:lesson, or make lesson)

One thread per process: with two per process the same run took several times longer on 2 shared cores (the toy
decoder above all).
"""

import argparse
import json
import sys
from pathlib import Path

from pds import paths
from studies import chain

N_TRAIN, N_VAL, N_TEST = 1000, 200, 200
N_PAIRS = 20
CLUSTER = {"n_init": 1}
EVALUATE = {"seeds": 1, "epochs": 20, "full_epochs": 1, "eval_every": 5, "paper_epochs": 21, "paper_lr_step": 11}
ENV = {"OMP_NUM_THREADS": "1", "PDS_NUM_THREADS": "1"}


def commands(out) -> list[list[str]]:
    """The preset's command lines: the world, the chain of notebooks, the book."""
    world = [sys.executable, "-m", "pds.toy.world", "--out", f"{out}/raw/toyworld", "--n-train", str(N_TRAIN),
             "--n-val", str(N_VAL), "--n-test", str(N_TEST), "--seed", "0"]
    book = [sys.executable, "-m", "studies.book", f"{out}/notebooks", f"{out}/book"]
    return [world, *chain.commands(out, "toyworld", N_PAIRS, cluster=CLUSTER, evaluate=EVALUATE), book]


def parameters(out) -> dict[str, dict]:
    """Each notebook's parameters in the preset: what the classroom switch (PDS_LESSON, `pds.paths.classroom`)
    gives a notebook opened in JupyterLab, so that Run All reads and writes the classroom world."""
    return chain.parameters(out, "toyworld", N_PAIRS, cluster=CLUSTER, evaluate=EVALUATE)


def write_parameters(out) -> Path:
    """out/parameters.json (written first, atomically: a half-written file is never read)."""
    path = Path(paths.resolve(out)) / paths.LESSON_PARAMETERS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(parameters(out), indent=1) + "\n")
    tmp.replace(path)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="build/lesson")
    args = p.parse_args(argv)
    write_parameters(args.out)
    chain.run(commands(args.out), ENV)
    print(f"lessons: {args.out}/notebooks/ (Jupyter) and {args.out}/book/index.html (the same as web pages); "
          f"to step through them yourself: make lab LESSON={args.out}")


if __name__ == "__main__":
    main()
