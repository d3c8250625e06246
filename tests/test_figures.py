"""The pages' figures are the executed notebooks' own: studies.figures finds the right output, and the committed copies
equal what their notebooks show now."""

import base64
import io

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

from pds.paths import ROOT
from studies import figures


def png(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2, 2), colour).save(buf, format="PNG")
    return buf.getvalue()


def image_cell(data: bytes):
    return new_code_cell("plot()", outputs=[new_output("display_data", data={"image/png": base64.b64encode(data).decode()})])


def write(tmp_path, cells):
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=cells), path)
    return path


def test_notebook_figure_takes_the_first_image_of_the_heading_s_section(tmp_path):
    red, green, blue = png("red"), png("green"), png("blue")
    nb = write(tmp_path, [new_markdown_cell("## Before"), image_cell(red),
                          new_markdown_cell("## Show: the pairs\ntext"), new_code_cell("x = 1"), image_cell(green),
                          image_cell(blue)])
    assert figures.notebook_figure(nb, "## Show: the pairs") == green


def test_notebook_figure_refuses_a_missing_heading_or_a_section_without_a_figure(tmp_path):
    nb = write(tmp_path, [new_markdown_cell("## Show"), new_code_cell("x = 1"),
                          new_markdown_cell("### Next"), image_cell(png("red"))])
    with pytest.raises(ValueError, match="no markdown cell starting with '## Elsewhere'"):
        figures.notebook_figure(nb, "## Elsewhere")
    with pytest.raises(ValueError, match="shows no figure"):
        figures.notebook_figure(nb, "## Show")
    with pytest.raises(FileNotFoundError, match="absent.ipynb not found"):
        figures.notebook_figure(tmp_path / "absent.ipynb", "## Show")


@pytest.mark.parametrize("page_figure", sorted(figures.FIGURES))
def test_committed_figures_equal_their_notebooks(page_figure):
    notebook, heading = figures.FIGURES[page_figure]
    assert (ROOT / page_figure).read_bytes() == figures.notebook_figure(ROOT / notebook, heading), (
        f"{page_figure} differs from {notebook}: run python -m studies.figures")


def test_every_figure_is_shown_on_a_page():
    pages = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    for page_figure in figures.FIGURES:
        assert page_figure in pages, f"{page_figure} is written by studies.figures but no page shows it"
