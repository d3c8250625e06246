"""`make book`: a static, offline HTML book of the executed notebooks (results/notebooks/0*.ipynb -> results/book/),
and what keeps those executed notebooks readable (no walls of progress bars, no library warnings)."""

import ast
import base64
import html
import importlib
import inspect
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from PIL import Image

from pds import paths
from pds.paths import ROOT

EXECUTED = sorted((ROOT / "results" / "notebooks").glob("0*.ipynb"))
LESSONS = ["01_embed", "02_cluster", "03_match", "04_synthesize", "05_evaluate"]
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def make_book(src, out):
    """`make book` with other folders; -o: never (re)install the venv from a test."""
    return subprocess.run(["make", "--no-print-directory", "-o", ".venv/bin/.installed", "book", f"BOOK_SRC={src}",
                           f"BOOK_OUT={out}"], cwd=ROOT, capture_output=True, text=True, timeout=300)


def lesson_head(nb):
    """(title, summary) from a notebook's first markdown cell: its `# ` line and its `>` lines."""
    first = next(c.source for c in nb.cells if c.cell_type == "markdown")
    title = next(line[2:].strip() for line in first.splitlines() if line.startswith("# "))
    summary = " ".join(line.lstrip("> ").strip() for line in first.splitlines() if line.startswith(">"))
    return title, summary


def pngs(nb):
    return [re.sub(r"\s", "", o["data"]["image/png"]) for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


class Fetches(HTMLParser):
    """Every URL a browser would fetch to show the page (scripts, stylesheets, images, frames, CSS imports / url())
    and every link target."""

    def __init__(self):
        super().__init__()
        self.fetched, self.links, self._style = [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "embed", "source", "audio", "video", "input") and a.get("src"):
            self.fetched.append(a["src"])
        if tag == "link" and a.get("href"):
            self.fetched.append(a["href"])
        if tag == "object" and a.get("data"):
            self.fetched.append(a["data"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if a.get("style"):
            self.fetched += re.findall(r"url\(\s*['\"]?([^'\")]+)", a["style"])
        self._style = tag == "style"

    def handle_data(self, data):
        if self._style:
            self.fetched += re.findall(r"url\(\s*['\"]?([^'\")]+)", data)
            self.fetched += re.findall(r"@import\s+(?:url\()?['\"]?([^'\");]+)", data)

    def handle_endtag(self, tag):
        self._style = False


def parse(html):
    p = Fetches()
    p.feed(html)
    return p


def remote(url):
    return bool(re.match(r"^([a-z][a-z0-9+.-]*:)?//", url, re.I)) and not url.startswith("data:")


# ----------------------------------------------------------------------------------------------------
# the book of the real executed notebooks


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    if len(EXECUTED) != len(LESSONS):
        pytest.skip("results/notebooks/ does not hold the five executed notebooks (run dvc repro)")
    src = tmp_path_factory.mktemp("executed")
    for f in EXECUTED:  # a snapshot, so a dvc repro rewriting results/notebooks/ meanwhile cannot mix versions
        shutil.copy(f, src / f.name)
    out = tmp_path_factory.mktemp("book")
    run = make_book(src, out)
    assert run.returncode == 0, run.stderr
    return src, out


@needs_make
def test_index_lists_the_five_lessons_in_order_with_their_titles_and_summaries(book):
    src, out = book
    index = (out / "index.html").read_text()
    assert parse(index).links == [f"{name}.html" for name in LESSONS] + ["answers.html"]
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", index)).split())  # what a reader sees
    positions = []
    for name in LESSONS:
        title, summary = lesson_head(nbformat.read(src / f"{name}.ipynb", as_version=4))
        assert title.startswith(name[:2]) and summary, name
        assert title in text and " ".join(summary.replace("`", "").split()) in text, name
        positions.append(text.index(title))
    assert positions == sorted(positions)


@needs_make
@pytest.mark.parametrize("name", LESSONS)
def test_every_figure_is_embedded_in_its_page_and_nothing_is_fetched(book, name):
    src, out = book
    page = (out / f"{name}.html").read_text()
    nb = nbformat.read(src / f"{name}.ipynb", as_version=4)
    if nb.metadata.get("papermill", {}).get("end_time") is None:
        pytest.skip(f"results/notebooks/{name}.ipynb is being executed (papermill has not finished it)")
    figures = pngs(nb)
    assert figures, f"{name} has no figures"
    for png in figures:
        assert f"data:image/png;base64,{png}" in re.sub(r"\s", "", page)
    found = parse(page)
    assert not [u for u in found.fetched if not u.startswith("data:")], "the page loads files: not self-contained"
    assert not [u for u in found.fetched if remote(u)]
    assert "<script" not in page  # no require.js, mermaid or MathJax: no markdown cell has math


# ----------------------------------------------------------------------------------------------------
# the mechanics, on a tiny fabricated book


def tiny_png():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def tiny_notebook(title, summary, body_markdown, png, stderr=""):
    outputs = [new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})]
    if stderr:
        outputs.insert(0, new_output("stream", name="stderr", text=stderr))
    return new_notebook(cells=[new_markdown_cell(f"# {title}\n> {summary}"), new_markdown_cell(body_markdown),
                               new_code_cell("plot()", outputs=outputs, execution_count=1)],
                        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})


@needs_make
def test_tiny_book_links_lessons_embeds_figures_and_loads_mathjax_only_for_math(tmp_path):
    src, out = tmp_path / "nb", tmp_path / "book"
    src.mkdir()
    png = tiny_png()
    bars = "".join(f"\rsteps: {p:3d}%|" + "#" * (p // 10) + f"| {p}/100" for p in range(0, 101, 10)) + "\n"
    nbformat.write(tiny_notebook("01 · First", "The first `lesson`.", "No math here: it costs $5.", png, bars),
                   src / "01_first.ipynb")
    nbformat.write(tiny_notebook("02 · Second", "The second lesson.", r"A prototype $\bar{x} = \frac{1}{n}\sum x_i$.",
                                 png), src / "02_second.ipynb")
    (out).mkdir()
    (out / "09_stale.html").write_text("old")  # a lesson removed since the last build disappears
    run = make_book(src, out)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["01_first.html", "02_second.html", "answers.html", "index.html"]
    index = (out / "index.html").read_text()
    assert parse(index).links == ["01_first.html", "02_second.html", "answers.html"]
    assert "01 · First" in index and "The first <code>lesson</code>." in index
    first, second = (out / "01_first.html").read_text(), (out / "02_second.html").read_text()
    assert "<title>01 · First</title>" in first
    assert {"index.html", "02_second.html"} <= set(parse(first).links)
    assert {"index.html", "01_first.html", "answers.html"} <= set(parse(second).links)  # the answer key comes last
    key = (out / "answers.html").read_text()
    assert {"index.html", "02_second.html"} <= set(parse(key).links) and "<h1>" in key
    for page in (first, second):
        assert f"data:image/png;base64,{png}" in page
    # a redrawn bar shows as Jupyter shows it: its last state, once
    assert first.count("steps:") == 1 and "100/100" in first
    # MathJax, the only script a page may load, and only where a markdown cell has math
    assert not [u for u in parse(first).fetched if not u.startswith("data:")]
    fetched = [u for u in parse(second).fetched if not u.startswith("data:")]
    assert fetched and all("mathjax" in u.lower() for u in fetched)


def test_the_book_leaves_out_papermills_injected_parameters_and_ends_with_the_answer_key(tmp_path):
    from studies import book

    nb = tiny_notebook("01 · First", "The first lesson.", "Text.", tiny_png())
    nb.cells.insert(1, new_code_cell("# Parameters\nseed = 7", metadata={"tags": ["injected-parameters"]}))
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "01_first.ipynb")
    key = tmp_path / "answers.md"
    key.write_text("# Answers\n\n### 01_first · exercise 1\nIt shows **this**.\n")
    assert book.build(tmp_path / "nb", tmp_path / "book", key) == 1
    page = (tmp_path / "book" / "01_first.html").read_text()
    assert "seed = 7" not in html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "answers.html" in parse(page).links
    assert "<strong>this</strong>" in (tmp_path / "book" / "answers.html").read_text()
    book.build(tmp_path / "nb", tmp_path / "book", tmp_path / "none.md")  # no key: no page, no link
    assert not (tmp_path / "book" / "answers.html").exists()
    assert "answers.html" not in parse((tmp_path / "book" / "01_first.html").read_text()).links


def test_a_markdown_image_is_embedded_from_the_notebooks_folder_and_a_missing_one_is_named(tmp_path):
    """Notebook 05 shows the tm_curve study's figures by a path relative to notebooks/; the executed copies lie
    elsewhere, so the book resolves the path against notebooks/ and embeds the file."""
    from studies import book

    (tmp_path / "notebooks").mkdir()
    for world, colour in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        (tmp_path / "results" / world).mkdir(parents=True)
        buf = io.BytesIO()
        Image.new("RGB", (2, 2), colour).save(buf, format="PNG")
        (tmp_path / "results" / world / "curve.png").write_bytes(buf.getvalue())
    cell = new_markdown_cell("Two figures:\n\n![first](../results/a/curve.png)\n\n![second](../results/b/curve.png)\n"
                             "and a remote one left alone: ![x](https://example.org/x.png)")
    book.attach_images(cell, "05.ipynb", tmp_path / "notebooks")
    assert "../results" not in cell.source and "https://example.org/x.png" in cell.source
    got = {k: base64.b64decode(v["image/png"]) for k, v in cell.attachments.items()}
    assert len(got) == 2  # same file name in two folders: two attachments
    assert sorted(got.values()) == sorted((tmp_path / "results" / w / "curve.png").read_bytes() for w in "ab")
    missing = new_markdown_cell("![gone](../results/c/curve.png)")
    with pytest.raises(SystemExit, match=r"05.ipynb shows ../results/c/curve.png, which is not there"):
        book.attach_images(missing, "05.ipynb", tmp_path / "notebooks")


def test_notebook_05_shows_both_worlds_iteration_curves_and_the_book_embeds_the_study_files():
    from studies import book

    nb = nbformat.read(ROOT / "notebooks" / "05_evaluate.ipynb", as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "markdown" and book.IMAGE.search(c.source)]
    shown = [m.group(2) for c in cells for m in book.IMAGE.finditer(c.source)]
    assert shown == ["../results/tm_curve/toyworld/curve.png", "../results/tm_curve/toyflickr/curve.png"]
    for c in cells:
        book.attach_images(c, "05_evaluate.ipynb")
    embedded = sorted(base64.b64decode(v["image/png"]) for c in cells for v in c.attachments.values())
    assert embedded == sorted((ROOT / "notebooks" / src).read_bytes() for src in shown)


@needs_make
def test_book_without_executed_notebooks_says_what_to_run(tmp_path):
    run = make_book(tmp_path, tmp_path / "book")
    assert run.returncode != 0 and "dvc repro" in run.stderr


# ----------------------------------------------------------------------------------------------------
# clean executed notebooks


def test_progress_switch(monkeypatch):
    monkeypatch.delenv("PDS_PROGRESS", raising=False)
    assert paths.progress() is True
    monkeypatch.setenv("PDS_PROGRESS", "0")
    assert paths.progress() is False
    monkeypatch.setenv("PDS_PROGRESS", "1")
    assert paths.progress() is True
    monkeypatch.setenv("PDS_PROGRESS", "no")
    with pytest.raises(ValueError, match="PDS_PROGRESS"):
        paths.progress()


def pds_calls(path):
    """(module, function, {keyword: source}) of every `module.function(...)` call on a pds module in a notebook."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    trees = [ast.parse("".join(c["source"])) for c in cells]
    modules = {a.name for t in trees for n in ast.walk(t) if isinstance(n, ast.ImportFrom) and n.module == "pds"
               for a in n.names}
    return [(n.func.value.id, n.func.attr, {k.arg: ast.unparse(k.value) for k in n.keywords if k.arg})
            for t in trees for n in ast.walk(t)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
            and n.func.value.id in modules]


@pytest.mark.parametrize("name", LESSONS)
def test_notebooks_hand_the_progress_switch_to_every_pds_loop_with_a_bar(name):
    """A pds function that draws a bar takes `progress`; a notebook passes `progress=paths.progress()`, so
    PDS_PROGRESS=0 (set by dvc.yaml) keeps the executed copy free of bars."""
    missing = []
    for module, func, keywords in pds_calls(ROOT / "notebooks" / f"{name}.ipynb"):
        target = getattr(importlib.import_module(f"pds.{module}"), func, None)
        if (callable(target) and "progress" in inspect.signature(target).parameters
                and keywords.get("progress") != "paths.progress()"):
            missing.append(f"{module}.{func}(progress={keywords.get('progress', '<default>')})")
    assert not missing, f"{name}: pass progress=paths.progress() to {missing}"


BAR = re.compile(r"\d+%\|.*\||\d+/\d+ \[\d\d:\d\d|it/s\]|img/s\]|batch/s\]|run/s\]")
WARNING = re.compile(r"\w*Warning\b|warn\(|pip install|deprecat", re.I)


@pytest.mark.parametrize("path", EXECUTED, ids=[p.stem for p in EXECUTED])
def test_executed_notebooks_hold_no_progress_bars_and_no_library_warnings(path):
    """What readers see (results/notebooks/, the book): regenerated by dvc repro."""
    noisy = []
    for k, cell in enumerate(nbformat.read(path, as_version=4).cells):
        for o in cell.get("outputs", []):
            text = o.get("text", "") if o.get("output_type") == "stream" else ""
            if BAR.search(text) or WARNING.search(text) or o.get("name") == "stderr" and text.strip():
                noisy.append(f"cell {k}: {text.strip()[:100]!r}")
    assert not noisy, f"{path.name} (rerun dvc repro after fixing the source):\n" + "\n".join(noisy[:8])


# ----------------------------------------------------------------------------------------------------
# fresh executed copies: what readers see is what the notebooks say today


def sources(nb):
    return [(c.cell_type, c.source) for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("name", LESSONS)
def test_executed_copies_hold_the_notebooks_cells_and_no_path_of_the_machine_that_ran_them(name):
    path = ROOT / "results" / "notebooks" / f"{name}.ipynb"
    if not path.is_file():
        pytest.skip(f"{path} not there (run dvc repro)")
    executed = nbformat.read(path, as_version=4)
    assert sources(executed) == sources(nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)), (
        f"{path} was executed from another version of notebooks/{name}.ipynb: rerun it (dvc repro)")
    machine = re.compile(r"(?<![\w.])/(?:work|home|tmp|root|Users|private|mnt)/")
    texts = [o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for c in executed.cells
             for o in c.get("outputs", [])]
    assert not [t for t in texts if str(ROOT) in t or machine.search(t)], f"{path} prints a path of its machine"
