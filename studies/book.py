"""The lessons as a static web page: an offline HTML book of the executed notebooks (`make book`).

    python -m studies.book results/notebooks results/book

One self-contained page per lesson (figures embedded as base64; no require.js or mermaid, MathJax only on a page
whose markdown has TeX math; papermill's injected-parameters cell left out: the parameters cell above it says the
same) with links to the previous and next lesson, an index listing the lessons in order with their titles and
one-line summaries (each notebook's first markdown cell), and, as the last page, the answer key for instructors
(docs/answers.md).
"""

import base64
import html
import mimetypes
import pathlib
import re
import sys

import jinja2
import mistune
import nbformat
from nbconvert import HTMLExporter
from traitlets.config import Config

ANSWERS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "answers.md"
# a markdown image's path is relative to the notebook's source (notebooks/), not to the executed copy's folder
NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")

TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}{%- if resources.book.math -%}{{ super() }}{%- endif -%}{%- endblock html_head_js_mathjax -%}
{%- block body_header -%}{{ super() }}{{ resources.book.nav }}{%- endblock body_header -%}
{%- block body_footer -%}{{ resources.book.nav }}{{ super() }}{%- endblock body_footer -%}
"""
ANSWERS_TITLE = "Answers to the exercises"
NAV_CSS = ("nav.book{font:14px/1.6 sans-serif;margin:8px 0;padding:6px 12px;background:#f4f4f4;border-radius:4px}"
           "nav.book a{color:#0072B2}")


def attach_images(cell, name: str, base: pathlib.Path = NOTEBOOKS) -> None:
    """Turn each local image of a markdown cell (`![alt](path)`, path relative to `base`) into a cell attachment,
    so that the page embeds it wherever the executed copy lies."""
    def attach(m):
        alt, src = m.groups()
        if re.match(r"[a-z]+:", src):  # data:, attachment:, http(s): left as they are
            return m.group(0)
        path = (base / src).resolve()
        if not path.is_file():
            raise SystemExit(f"make book: {name} shows {src}, which is not there ({path}); make it first (its "
                             "study's make target), or remove the image from the notebook.")
        key = re.sub(r"[^\w.-]+", "_", src.lstrip("./"))  # two folders' curve.png stay two attachments
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        cell.setdefault("attachments", {})[key] = {mime: base64.b64encode(path.read_bytes()).decode("ascii")}
        return f"![{alt}](attachment:{key})"

    cell.source = IMAGE.sub(attach, cell.source)


def build(src: pathlib.Path, out: pathlib.Path, answers: pathlib.Path | None = ANSWERS) -> int:
    """Write out/index.html, one page per src/0*.ipynb and, when `answers` exists, out/answers.html (the answer key,
    the last page); returns the number of lessons."""
    files = sorted(src.glob("0*.ipynb"))
    if not files:
        raise SystemExit(f"make book: no executed notebooks {src}/0*.ipynb; run dvc repro (or make repro) first.")
    # streams are merged and carriage returns applied, as Jupyter shows them (a redrawn bar is one line, not a wall)
    exporter = HTMLExporter(template_name="lab", template_file="book.html.j2", embed_images=True,
                            extra_loaders=[jinja2.DictLoader({"book.html.j2": TEMPLATE})],
                            config=Config({"CoalesceStreamsPreprocessor": {"enabled": True}}))
    lessons = []
    for f in files:
        nb = nbformat.read(f, as_version=4)
        nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        for c in nb.cells:
            if c.cell_type == "markdown":
                attach_images(c, f.name)
        first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
        title = next((line[2:].strip() for line in first.splitlines() if line.startswith("# ")), f.stem)
        summary = " ".join(line.lstrip("> ").strip() for line in first.splitlines() if line.startswith(">"))
        # TeX math: double dollars, \( \) or \[ \], or single dollars hugging their formula (a price is not math)
        math = any(re.search(r"\$\$|\\\(|\\\[|(?<![\\$])\$[^\s$](?:[^$\n]*[^\s$\\])?\$(?!\d)", c.source)
                   for c in nb.cells if c.cell_type == "markdown")
        lessons.append((f, nb, title, summary, math))
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("0*.html"), out / "index.html", out / "answers.html"]:
        stale.unlink(missing_ok=True)

    def link(k):
        return f'<a href="{lessons[k][0].stem}.html">{html.escape(lessons[k][2])}</a>'

    key = answers if answers is not None and answers.is_file() else None
    key_link = f'<a href="answers.html">{ANSWERS_TITLE}</a>'

    def nav(parts):
        return f"<style>{NAV_CSS}</style><nav class=\"book\">{' &middot; '.join(parts)}</nav>"

    for k, (f, nb, title, _, math) in enumerate(lessons):
        nb.metadata["title"] = title
        parts = ['<a href="index.html">Contents</a>']
        parts += [f"previous: {link(k - 1)}"] if k > 0 else []
        parts += [f"next: {link(k + 1)}"] if k + 1 < len(lessons) else [f"next: {key_link}"] if key else []
        body, _ = exporter.from_notebook_node(nb, resources={"book": {"nav": nav(parts), "math": math}})
        (out / f"{f.stem}.html").write_text(body, encoding="utf-8")
    if key:
        bar = nav(['<a href="index.html">Contents</a>', f"previous: {link(len(lessons) - 1)}"])
        (out / "answers.html").write_text(f"""<!DOCTYPE html>
    <html lang="en"><head><meta charset="utf-8"><title>{ANSWERS_TITLE}</title>
    <style>body{{font:16px/1.5 sans-serif;max-width:46em;margin:2em auto;padding:0 1em}}</style></head>
    <body>{bar}{mistune.html(key.read_text(encoding="utf-8"))}{bar}</body></html>
    """, encoding="utf-8")
    items = "\n".join(f"<li>{link(k)}{mistune.html(s)}</li>" for k, (_, _, _, s, _) in enumerate(lessons))
    items_key = f"<p>For instructors: {key_link}, the expected outcome of every exercise.</p>" if key else ""
    (out / "index.html").write_text(f"""<!DOCTYPE html>
    <html lang="en"><head><meta charset="utf-8"><title>PDS: the lessons</title>
    <style>body{{font:16px/1.5 sans-serif;max-width:46em;margin:2em auto;padding:0 1em}} li{{margin:0 0 1em}}
    li p{{margin:.2em 0}} a{{font-weight:bold}}</style></head>
    <body><h1>PDS: Prototype-guided Data Synthesis, step by step</h1>
    <p>The notebooks as executed by the last <code>dvc repro</code> (from <code>{html.escape(str(src))}</code>), one
    lesson per step of the method, to be read in order.</p>
    <ol>
    {items}
    </ol>{items_key}</body></html>
    """, encoding="utf-8")
    return len(lessons)


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    src, out = (pathlib.Path(a) for a in (args + ["results/notebooks", "results/book"][len(args):])[:2])
    n = build(src, out)
    print(f"wrote {out}/index.html and {n} lessons")


if __name__ == "__main__":
    main()
