"""The notebooks as lessons (../shared/STYLE.md, "Notebooks"; DESIGN.md §6, "Lessons"): each opens with its idea,
closes with a summary and 2-4 exercises, and every by-hand cell checks itself against the `pds` call with an
assert; each of 01-04 names its prerequisite when its input is missing; the lesson figures of `pds.plots` keep
the figure conventions; and `make lesson`, the classroom preset, runs the five notebooks on a small world of its
own without touching data/ or results/ (the full run is marked slow)."""

import ast
import re
import shutil
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import papermill  # noqa: E402
import pytest  # noqa: E402
from fakes import make_fake_embeddings  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from test_pipeline_contract import parameters_cell  # noqa: E402

from pds import plots  # noqa: E402
from pds.paths import ROOT  # noqa: E402

LESSONS = ["01_embed", "02_cluster", "03_match", "04_synthesize", "05_evaluate"]
BY_HAND = "by-hand"  # the tag of a cell that writes the key computation out by hand
RUN_TIME = re.compile(r"run time:?[^.]*?\b(seconds?|minutes?|min|s|hours?)\b", re.I)  # "Run time: about 2 minutes."
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def notebook(name):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def heading(cell):
    return cell.source.lstrip().splitlines()[0].strip() if cell.source.strip() else ""


def markdown_with(nb, title):
    return [k for k, c in enumerate(nb.cells) if c.cell_type == "markdown" and heading(c) == title]


# ----------------------------------------------------------------------------------------------------
# the shape of a lesson


@pytest.mark.parametrize("name", LESSONS)
def test_the_second_cell_is_the_idea(name):
    nb = notebook(name)
    idea = nb.cells[1]
    assert idea.cell_type == "markdown" and heading(idea) == "## The idea", (
        f"{name}: the cell after the title must be markdown opening with '## The idea'")
    assert len(idea.source.split()) >= 80, f"{name}: the idea is one real paragraph (what the step does, why, the picture)"


@pytest.mark.parametrize("name", LESSONS)
def test_the_summary_says_what_was_produced_what_it_means_and_what_comes_next(name):
    nb = notebook(name)
    found = markdown_with(nb, "## Summary")
    assert len(found) == 1, f"{name}: one markdown cell opening with '## Summary'"
    text = nb.cells[found[0]].source
    for part in ("What we produced", "What it means", "Next"):
        assert f"**{part}" in text, f"{name}: the summary names '{part}' in bold"
    k = LESSONS.index(name)
    if k + 1 < len(LESSONS):
        assert f"{LESSONS[k + 1]}.ipynb" in text, f"{name}: the summary points to the next notebook"
    params = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert found[0] > params


@pytest.mark.parametrize("name", LESSONS)
def test_exercises_close_the_lesson_each_with_a_parameter_a_run_time_and_what_to_look_for(name):
    nb = notebook(name)
    found = markdown_with(nb, "## Exercises")
    assert found == [len(nb.cells) - 1], f"{name}: the last cell is the exercises, opening with '## Exercises'"
    assert markdown_with(nb, "## Summary")[0] < found[0]
    items = re.split(r"\n(?=\d+\. )", "\n" + nb.cells[found[0]].source)[1:]
    assert 2 <= len(items) <= 4, f"{name}: 2-4 numbered exercises, found {len(items)}"
    for item in items:
        assert "`" in item, f"{name}: an exercise names what to change in code: {item[:60]!r}"
        assert RUN_TIME.search(item), f"{name}: an exercise gives its expected run time: {item[:60]!r}"
        assert "look for" in item.lower(), f"{name}: an exercise says what to look for: {item[:60]!r}"


def by_hand_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and BY_HAND in c.metadata.get("tags", [])]


@pytest.mark.parametrize("name", LESSONS)
def test_every_by_hand_cell_asserts_that_it_agrees_with_pds(name):
    nb = notebook(name)
    cells = by_hand_cells(nb)
    assert cells, f"{name}: the key computation is written out by hand in a cell tagged {BY_HAND!r}"
    for cell in cells:
        tree = ast.parse(cell.source)
        asserts = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]
        assert asserts, f"{name}: by-hand cell without an assert:\n{cell.source[:200]}"
        called = {n.func.value.id for n in ast.walk(tree) if isinstance(n, ast.Call)
                  and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)}
        names = {n.id for a in asserts for n in ast.walk(a) if isinstance(n, ast.Name)}
        assert called & {"np", "torch"} or names, f"{name}: a by-hand cell computes something and checks it"
    # no pipeline logic defined in a notebook: the by-hand lines are inline, never a def or a class
    for cell in nb.cells:
        if cell.cell_type == "code":
            defs = [n for n in ast.walk(ast.parse(cell.source)) if isinstance(n, ast.FunctionDef | ast.ClassDef)]
            assert not defs, f"{name}: def/class in a notebook; pipeline logic belongs in pds"


def test_the_lessons_follow_one_matched_pair_from_03_to_04():
    """03 follows the median intersection end to end; 04 decodes that same prototype by hand."""
    match_cells = "\n".join(c.source for c in by_hand_cells(notebook("03_match")))
    synth_cells = "\n".join(c.source for c in by_hand_cells(notebook("04_synthesize")))
    assert "np.add.at" in match_cells and "linear_sum_assignment" in match_cells
    assert "median" in match_cells and "median" in synth_cells
    assert "image_embeds=" in synth_cells and "manual_seed(seed + m)" in synth_cells


# ----------------------------------------------------------------------------------------------------
# a missing input names the one command that makes it (tests/test_artifacts.py: the pipeline's and the
# classroom world's folders)

PREREQUISITES = {
    "01_embed": ({"dataset_root": "{tmp}/no-world"}, "`python -m pds.toy.world --out {tmp}/no-world`"),
    "02_cluster": ({"embeddings_dir": "{tmp}/no-embeddings"}, 'notebook 01 run with out_dir = "{tmp}/no-embeddings"'),
    # 03 reads the embeddings before the clusters: fabricated ones, so a fresh clone (no data/) tests the same
    "03_match": ({"clusters_dir": "{tmp}/no-clusters", "embeddings_dir": "{tmp}/embeddings"},
                 'notebook 02 run with out_dir = "{tmp}/no-clusters"'),
    "04_synthesize": ({"prototypes_dir": "{tmp}/no-prototypes"}, 'notebook 03 run with out_dir = "{tmp}/no-prototypes"'),
}


@pytest.mark.parametrize("name", list(PREREQUISITES))
def test_a_missing_input_names_its_prerequisite_in_one_line(name, tmp_path):
    params, message = PREREQUISITES[name]
    params = {k: v.format(tmp=tmp_path) for k, v in params.items()} | {"out_dir": str(tmp_path / "out")}
    if "embeddings_dir" in params and name != "02_cluster":
        make_fake_embeddings(params["embeddings_dir"])
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
                                   kernel_name="python3", cwd=str(ROOT), progress_bar=False, parameters=params)
    assert err.value.ename == "FileNotFoundError"
    assert message.format(tmp=tmp_path) in err.value.evalue and "\n" not in err.value.evalue
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------
# the lesson figures (pds.plots)


def test_pca_fit_matches_the_eigenvectors_of_the_covariance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    mean, comps = plots.pca_fit(x, 2)
    _, vecs = np.linalg.eigh(np.cov(x.T))
    naive = vecs[:, ::-1][:, :2].T  # (2, d) largest eigenvalues first
    assert np.allclose(mean, x.mean(0))
    assert np.allclose(np.abs(comps @ naive.T), np.eye(2), atol=1e-8)  # the same axes, up to sign
    flipped_mean, flipped = plots.pca_fit(-x, 2)  # the sign convention: largest loading positive
    assert np.allclose(flipped, comps) and (comps[np.arange(2), np.abs(comps).argmax(1)] > 0).all()
    with pytest.raises(ValueError, match="n_components"):
        plots.pca_fit(x[:1])


@pytest.fixture(scope="module")
def lesson_figures():
    rng = np.random.default_rng(0)
    out = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    plots.scatter_2d(ax, {"image": rng.normal(size=(50, 2)), "text": rng.normal(size=(50, 2))}, "PCA")
    out["scatter_2d"] = fig
    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    plots.cosine_matrix(ax, rng.uniform(-0.5, 1, (5, 5)))
    out["cosine_matrix"] = fig
    fig, ax = plt.subplots(figsize=(8, 3))
    words = rng.integers(3, 20, 500)
    plots.dropped_by_length(ax, words, words + rng.normal(0, 3, 500) > 8, 0.2)
    out["dropped_by_length"] = fig
    fig, ax = plt.subplots(figsize=(9, 5))
    img, txt = rng.normal(size=(40, 8)), rng.normal(size=(30, 8))
    plots.match_region(ax, img, np.arange(40) < 15, txt, np.arange(30) < 15, img.mean(0), txt.mean(0),
                       img[:15].mean(0), txt[:15].mean(0), txt[0])
    out["match_region"] = fig
    for f in out.values():
        f.tight_layout()
    yield out
    plt.close("all")


@pytest.mark.parametrize("name", ["scatter_2d", "cosine_matrix", "dropped_by_length", "match_region"])
def test_lesson_figures_keep_text_at_9_pt_legends_outside_and_fit_a_column(lesson_figures, name):
    fig = lesson_figures[name]
    small = [(t.get_text()[:30], t.get_fontsize()) for t in fig.findobj(Text)
             if t.get_visible() and t.get_text().strip() and t.get_fontsize() < plots.MIN_FONTSIZE]
    assert not small, f"{name}: text below {plots.MIN_FONTSIZE} pt: {small}"
    assert fig.get_figwidth() <= plots.MAX_WIDTH_INCHES
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None:
            box = legend.get_window_extent(r)
            assert not any(box.overlaps(a.get_window_extent(r)) for a in fig.axes), f"{name}: legend over data"


def test_match_region_draws_prototypes_in_pds_colour_and_modalities_in_theirs(lesson_figures):
    from matplotlib.colors import to_hex

    ax = lesson_figures["match_region"].axes[0]
    colours = {c.get_label(): to_hex(c.get_facecolor()[0]) for c in ax.collections}
    assert colours["image prototype (PDS)"] == colours["text prototype (PDS)"] == to_hex(plots.method_colour("pds"))
    assert colours["image cluster centroid"] == to_hex(plots.MODALITY_COLOURS["image"])
    assert colours["text cluster centroid"] == to_hex(plots.MODALITY_COLOURS["text"])


# ----------------------------------------------------------------------------------------------------
# make lesson: the classroom preset


def lesson_commands(lesson_dir):
    """The command lines of the classroom preset (studies.lesson), with its environment as leading NAME=value words."""
    from studies import lesson

    env = [f"{k}={v}" for k, v in {"PDS_PROGRESS": "0", **lesson.ENV}.items()]
    return [env + argv for argv in lesson.commands(lesson_dir)]


def papermill_call(words):
    """(input, output, {param: value}, env assignments) of a papermill command line."""
    i = next(k for k, w in enumerate(words) if w.endswith("papermill"))
    env = dict(w.split("=", 1) for w in words[:i] if "=" in w)
    positional, params, k = [], {}, i + 1
    while k < len(words):
        if words[k] in ("-p", "-r"):
            params[words[k + 1]] = words[k + 2]
            k += 3
        elif words[k] in ("-k", "--kernel"):
            k += 2
        else:
            if not words[k].startswith("-"):
                positional.append(words[k])
            k += 1
    return positional[0], positional[1], params, env


def test_the_lesson_preset_runs_the_five_notebooks_on_its_own_small_world_and_never_touches_data_or_results(tmp_path):
    out = tmp_path / "lesson"
    commands = lesson_commands(out)
    calls = [papermill_call(w) for w in commands if any(x.endswith("papermill") for x in w)]
    assert [c[0] for c in calls] == [f"notebooks/{n}.ipynb" for n in LESSONS]
    assert [c[1] for c in calls] == [f"{out}/notebooks/{n}.ipynb" for n in LESSONS]
    for (src, _, params, env), name in zip(calls, LESSONS, strict=True):
        assert env.get("PDS_PROGRESS") == "0", f"{name}: executed lessons carry no progress bars"
        defaults = parameters_cell(ROOT / src)
        for key, value in params.items():
            assert key in defaults, f"the lesson preset passes -p {key}, not a parameter of {src}"
            if isinstance(defaults[key], int | float) and value != "":
                type(defaults[key])(value)  # parses as the parameter's type
            if key.endswith(("_dir", "_root")) and key != "encoders_dir" and value:  # "": tm_dir left out
                assert value.startswith(f"{out}/"), f"{name}: {key}={value} is outside the lesson folder"
        assert "out_dir" in params, f"{name}: its outputs must go to the lesson folder, not the default"
    # nothing of the pipeline's own data or results, read or written
    for words in commands:
        for w in words:
            assert not re.match(r"^(\./)?(data|results)(/|$)", w), f"the lesson touches {w}: {' '.join(words)}"
    world = next(w for w in commands if "pds.toy.world" in w)
    assert world[world.index("--out") + 1] == f"{out}/raw/toyworld"
    sizes = {k: int(world[world.index(k) + 1]) for k in ("--n-train", "--n-val", "--n-test")}
    assert sizes["--n-train"] <= 2000 and sizes["--n-test"] >= 100  # small, yet a test split to retrieve from
    features = next(w for w in commands if "pds.text_features" in w)
    assert features[features.index("--out") + 1] == f"{out}/text_features"
    cluster, evaluate = calls[1][2], calls[4][2]
    assert cluster["n_clusters"] == evaluate["n_pairs"]  # notebook 05 refuses another budget than the prototypes'
    assert evaluate["seeds"] == "1" and int(evaluate["epochs"]) <= 30 and "protocol" not in evaluate  # both protocols
    assert any("studies.book" in " ".join(w) and f"{out}/book" in w for w in commands)


@needs_make
@pytest.mark.slow
def test_the_lesson_preset_runs_end_to_end_and_its_book_builds(tmp_path):
    """The whole preset (a few minutes on 2 cores); its timing is reported, never asserted."""
    out = tmp_path / "lesson"
    run = subprocess.run([sys.executable, "-m", "studies.lesson", "--out", str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in LESSONS:
        nb = nbformat.read(out / "notebooks" / f"{name}.ipynb", as_version=4)
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, name
    assert (out / "evaluate" / "metrics.json").is_file() and (out / "book" / "index.html").is_file()
    assert len(list((out / "synthetic").glob("*.png"))) == 20
    book = subprocess.run(["make", "--no-print-directory", "-o", ".venv/bin/.installed", "book",
                           f"BOOK_SRC={out}/notebooks", f"BOOK_OUT={tmp_path}/book"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert book.returncode == 0, book.stderr
    assert sorted(p.name for p in (tmp_path / "book").glob("0*.html")) == [f"{n}.html" for n in LESSONS]


# ----------------------------------------------------------------------------------------------------
# the classroom switch: make lesson, then make lab (PDS_LESSON), then Run All


def test_the_classroom_switch_replaces_only_the_parameters_still_at_their_default(tmp_path, monkeypatch):
    from pds import paths
    from studies import lesson

    defaults = paths.notebook_defaults("02_cluster")
    assert defaults == parameters_cell(ROOT / "notebooks" / "02_cluster.ipynb")
    monkeypatch.delenv("PDS_LESSON", raising=False)
    assert paths.classroom("02_cluster", dict(defaults)) == {}
    monkeypatch.setenv("PDS_LESSON", str(tmp_path / "lesson"))
    with pytest.raises(FileNotFoundError, match="make lesson"):
        paths.classroom("02_cluster", dict(defaults))
    lesson.write_parameters(tmp_path / "lesson")
    mine = dict(defaults, rm_ratio=0.5)  # the reader's own change (an exercise) stays
    got = paths.classroom("02_cluster", mine)
    assert got["n_clusters"] == lesson.N_PAIRS and got["out_dir"] == str(tmp_path / "lesson" / "clusters")
    assert "rm_ratio" not in got
    assert paths.classroom("05_evaluate", paths.notebook_defaults("05_evaluate"))["tm_runs"] == ""


@pytest.mark.parametrize("name", LESSONS)
def test_every_lesson_takes_the_classroom_switch_before_it_uses_a_parameter(name):
    nb = notebook(name)
    params = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    imports = nb.cells[params + 1].source
    call = f'globals().update(paths.classroom("{name}", globals()))'
    assert call in imports, f"{name}: the cell after the parameters takes the classroom switch"
    before = imports[:imports.index(call)]
    assert all(line.startswith(("import ", "from ", "pd.set_option", "torch.set_num_threads")) or not line.strip()
               for line in before.splitlines()), f"{name}: a parameter is used before the switch"


def test_the_studies_never_run_under_the_classroom_switch(monkeypatch):
    from studies import chain

    seen = []
    monkeypatch.setenv("PDS_LESSON", "build/lesson")
    monkeypatch.setattr(chain.subprocess, "run", lambda argv, cwd, env: seen.append(env) or
                        subprocess.CompletedProcess(argv, 0))
    chain.run([["true"]])
    assert "PDS_LESSON" not in seen[0] and seen[0]["PDS_PROGRESS"] == "0"


def test_a_notebook_run_under_the_classroom_switch_reads_the_classroom_world_and_names_make_lesson(tmp_path,
                                                                                                   monkeypatch):
    """What *Run All* in `make lab` does before `make lesson` has made the world: the defaults point into the
    classroom folder, and the missing input names the one command that makes it."""
    from studies import lesson

    lesson.write_parameters(tmp_path / "lesson")  # the parameters, not yet the world
    monkeypatch.setenv("PDS_LESSON", str(tmp_path / "lesson"))
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(ROOT / "notebooks" / "02_cluster.ipynb"), str(tmp_path / "02.ipynb"),
                                   kernel_name="python3", cwd=str(ROOT), progress_bar=False)
    assert err.value.ename == "FileNotFoundError"
    assert f"{tmp_path}/lesson/embeddings does not exist: make it first with `make lesson`" in err.value.evalue
    assert not (tmp_path / "lesson" / "clusters").exists()
