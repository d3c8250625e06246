"""Figures for the README and the docs/ pages, taken from the committed executed notebooks (`python -m studies.figures`).

A page cannot embed a notebook's output, and data/ (DVC output) is absent from a fresh clone, so the picture is
copied byte for byte from `results/notebooks/`; `tests/test_figures.py` fails when the copy and its notebook differ.
"""

import base64
import pathlib
import sys

import nbformat

from pds.data import atomic_write
from pds.paths import ROOT

# page figure -> (executed notebook, the markdown heading that opens the section whose first figure it is)
FIGURES = {
    "docs/figures/real_vs_distilled.png": ("results/notebooks/04_synthesize.ipynb",
                                           "## Show: synthetic images beside the real pairs"),
}


def notebook_figure(notebook: str | pathlib.Path, heading: str) -> bytes:
    """The PNG bytes of the first image output after the markdown cell that starts with `heading`."""
    notebook = pathlib.Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"{notebook} not found: run dvc repro (or make repro) to write the executed notebooks.")
    cells = nbformat.read(notebook, as_version=4).cells
    start = next((k for k, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith(heading)), None)
    if start is None:
        raise ValueError(f"{notebook} has no markdown cell starting with {heading!r}: update studies.figures.FIGURES.")
    for cell in cells[start + 1:]:
        if cell.cell_type == "markdown" and cell.source.startswith("#"):
            break  # the next section: the heading's own section has no figure
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if "image/png" in out.get("data", {}):
                return base64.b64decode(out["data"]["image/png"])
    raise ValueError(f"{notebook}: the section {heading!r} shows no figure; run the notebook, or update "
                     "studies.figures.FIGURES.")


def write_figures(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    """Write every page figure of FIGURES under `root`; returns their paths."""
    written = []
    for page_figure, (notebook, heading) in FIGURES.items():
        png = notebook_figure(root / notebook, heading)
        written.append(atomic_write(root / page_figure, lambda tmp, png=png: tmp.write_bytes(png)))
    return written


def main(argv=None) -> None:
    if (sys.argv[1:] if argv is None else argv):
        raise SystemExit("usage: python -m studies.figures  (takes no arguments; the figures are listed in FIGURES)")
    for path in write_figures():
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
