"""Paths anchored at the repository root, so notebooks run the same from Jupyter (cwd notebooks/)
and from papermill / DVC (cwd repo root)."""

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
RAW = DATA / "raw"
MODELS = ROOT / "models"
RESULTS = ROOT / "results"


def resolve(path: str | os.PathLike) -> Path:
    """Absolute paths stay as they are; relative paths are taken from the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else ROOT / p


TOY_KINDS = {"clip": "local-dir:models/{dataset}/toy-clip", "unclip": "models/{dataset}/toy-unclip",
             "encoders": "models/{dataset}/toy-encoders"}


def toy_model(name: str, dataset: str, kind: str) -> str:
    """`name` itself, unless it is `toy`: then the world `dataset`'s toy model of `kind` (clip, unclip or
    encoders), which stage toymodels@<dataset> wrote under models/<dataset>/."""
    if kind not in TOY_KINDS:
        raise ValueError(f"unknown toy model kind {kind!r}; use one of {', '.join(TOY_KINDS)}.")
    if name != "toy":
        return name
    if not dataset or "/" in dataset:
        raise ValueError(f"dataset={dataset!r} must be a world's name (base.dataset) to find its toy {kind}.")
    return TOY_KINDS[kind].format(dataset=dataset)


def device() -> str:
    """The torch device from `PDS_DEVICE` (cpu by default); not a param, so switching keeps DVC's cache valid."""
    return os.environ.get("PDS_DEVICE", "cpu")


def batch_size(default: int) -> int:
    """Batch size from `PDS_BATCH_SIZE`; it changes speed, and results only by float rounding, so it is not a param."""
    return int(os.environ.get("PDS_BATCH_SIZE", default))


def num_workers(default: int = 0) -> int:
    """Data-loader worker processes from `PDS_NUM_WORKERS`."""
    return int(os.environ.get("PDS_NUM_WORKERS", default))


def progress() -> bool:
    """Whether long loops (embedding, synthesis, student training) show a tqdm bar: yes, unless `PDS_PROGRESS=0`.

    dvc.yaml sets `PDS_PROGRESS=0` on its papermill commands, because papermill records every redraw of a bar
    as an output and the executed notebooks in results/notebooks/ are what readers see; Jupyter and the
    terminal keep their one-line bar. Not a param: it changes no result.
    """
    value = os.environ.get("PDS_PROGRESS", "1")
    if value not in ("0", "1"):
        raise ValueError(f"PDS_PROGRESS={value!r}: use 1 (progress bars, the default) or 0 (none).")
    return value == "1"


# ----------------------------------------------------------------------------------------------------
# the classroom switch: PDS_LESSON=<folder> points every lesson's defaults at the classroom world there

LESSON_PARAMETERS = "parameters.json"  # in the classroom folder: each notebook's parameters as `make lesson` ran it


def lesson_dir() -> Path | None:
    """The classroom folder from `PDS_LESSON` (e.g. build/lesson, made by `make lesson`), or None when unset.

    Set by `make lab` for the JupyterLab it starts once build/lesson exists (or by `make lab LESSON=<folder>`):
    the notebooks then read and write the classroom world's folders with its settings (M = 20, one student seed,
    ...), so Run All works after `make lesson` alone. Not a param: the pipeline and the studies never set it
    (`studies.chain` clears it)."""
    value = os.environ.get("PDS_LESSON", "")
    return resolve(value) if value else None


def notebook_defaults(notebook: str) -> dict:
    """The literal defaults of notebooks/<notebook>.ipynb's parameters cell (the cell tagged `parameters`)."""
    import ast

    nb = json.loads((ROOT / "notebooks" / f"{notebook}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    out = {}
    for node in ast.parse("".join(cell["source"])).body:
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
        out[target.id] = ast.literal_eval(node.value)
    return out


def classroom(notebook: str, namespace: dict) -> dict:
    """With `PDS_LESSON` set, the parameters `make lesson` ran `notebook` (e.g. "02_cluster") with, read from
    <folder>/parameters.json, for the notebook to take in place of its defaults (`globals().update(...)`); {}
    when unset. Only a parameter still at its default (in `namespace`, the notebook's globals) is replaced: a
    value the reader set in the parameters cell, or papermill injected, stays. A classroom folder that
    `make lesson` has not made yet is named, with the command."""
    folder = lesson_dir()
    if folder is None:
        return {}
    path = folder / LESSON_PARAMETERS
    if not path.is_file():
        raise FileNotFoundError(f"PDS_LESSON={os.environ['PDS_LESSON']}: {path} not found; make the classroom world "
                                "with `make lesson` first (or unset PDS_LESSON for the default run's folders).")
    table = json.loads(path.read_text())
    if notebook not in table:
        raise ValueError(f"{path} has no parameters for {notebook}; rerun `make lesson`.")
    defaults = notebook_defaults(notebook)
    return {k: v for k, v in table[notebook].items() if k in defaults and namespace.get(k) == defaults[k]}
