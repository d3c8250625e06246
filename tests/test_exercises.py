"""Every exercise of the lessons runs as written, at classroom size: each is a set of parameters (or a short code
change) given to its notebook, executed through papermill on the classroom world (`studies.lesson`, built once per
run of this file in a temporary folder, or the finished one `PDS_TEST_LESSON` names, read only), writing only under
tmp_path: no exception, nothing written into the classroom world, data/ or results/. docs/answers.md, the answer
key, says what each one shows; the fast tests below keep the two in step with the notebooks' exercise lists.

The runs take minutes (the world and notebooks 01-04 first), so they are marked slow: `pytest -m slow
tests/test_exercises.py`.
"""

import os
import re

import nbformat
import papermill
import pytest

from pds.paths import ROOT

LESSONS = ["01_embed", "02_cluster", "03_match", "04_synthesize", "05_evaluate"]
FIVE = 'methods="pds,pds_real,random"'

# (notebook, exercise number) -> the steps it asks for: (notebook, parameters, {text in a cell: (old, new)}), run in
# order; "{tmp}" is the exercise's scratch folder, where every step writes (out_dir); a folder parameter named in a
# step replaces the classroom world's.
EXERCISES = {
    ("01_embed", 1): [("01_embed", {}, {"my_captions = [": (
        "my_captions = [", 'my_captions = ["a red circle", "two blue squares at the top", ')})],
    ("01_embed", 2): [("01_embed", {"max_words": 5}, {})],
    ("01_embed", 3): [("01_embed", {}, {"plots.pca_fit(": ("n_components=2", "n_components=3")})],
    ("02_cluster", 1): [("02_cluster", {"rm_ratio": 0.0}, {}),
                        ("03_match", {"clusters_dir": "{tmp}/02_cluster"}, {})],
    ("02_cluster", 2): [("02_cluster", {"rm_ratio": 0.5}, {})],
    ("02_cluster", 3): [("02_cluster", {"n_init": 20}, {})],  # the classroom world uses 1, the default run 20
    ("03_match", 1): [("03_match", {}, {"# the median intersection": (
        'm = int(np.argsort(protos.overlap, kind="stable")[len(protos) // 2])',
        'm = int(np.argsort(protos.overlap, kind="stable")[len(protos) // 10])')})],
    ("03_match", 2): [("03_match", {}, {"protos = match.prototypes(": ("protos = ", "cols = greedy\nprotos = ")})],
    ("03_match", 3): [("03_match", {"empty": "drop"}, {})],
    ("04_synthesize", 1): [("04_synthesize", {"noise_level": 200}, {})],
    ("04_synthesize", 2): [("04_synthesize", {"num_inference_steps": 5}, {})],
    ("04_synthesize", 3): [("04_synthesize", {}, {"grid = [(g, e)": ("grid_m = m ", "grid_m = 0 ")})],
    ("05_evaluate", 1): [("05_evaluate", {"methods": "pds,pds_real,random", "seeds": 1, "image_encoders": "convnet"},
                          {})],
    ("05_evaluate", 2): [("05_evaluate", {"methods": "pds,pds_real,random", "seeds": 1, "image_encoders": "convnet",
                                          "protocol": "paper"}, {})],
    ("05_evaluate", 3): [("02_cluster", {"n_clusters": 40}, {}),
                         ("03_match", {"clusters_dir": "{tmp}/02_cluster"}, {}),
                         ("04_synthesize", {"prototypes_dir": "{tmp}/03_match"}, {}),
                         ("05_evaluate", {"clusters_dir": "{tmp}/02_cluster", "prototypes_dir": "{tmp}/03_match",
                                          "synthetic_dir": "{tmp}/04_synthesize", "n_pairs": 40,
                                          "methods": "pds,random", "seeds": 1}, {})],
}


def notebook(name):
    return nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)


def exercise_count(name):
    cell = next(c for c in notebook(name).cells if c.cell_type == "markdown" and c.source.startswith("## Exercises"))
    return len(re.findall(r"^\d+\. ", cell.source, flags=re.M))


def test_every_exercise_of_every_lesson_has_a_run():
    assert sorted(EXERCISES) == [(name, k + 1) for name in LESSONS for k in range(exercise_count(name))]


def test_the_answer_key_has_one_answer_per_exercise():
    text = (ROOT / "docs" / "answers.md").read_text()
    found = re.findall(r"^### (0\d)_\w+ · exercise (\d)\b", text, flags=re.M)
    assert [(f"{n}", int(k)) for n, k in found] == [(name[:2], k) for name, k in sorted(EXERCISES)]
    for name in LESSONS:
        assert f"notebooks/{name}.ipynb" in text, f"the answer key links {name}"


def test_every_code_change_of_an_exercise_applies_to_its_notebook():
    for steps in EXERCISES.values():
        for name, _, edits in steps:
            cells = notebook(name).cells
            for text, (old, _) in edits.items():
                hits = [c for c in cells if c.cell_type == "code" and text in c.source]
                assert len(hits) == 1 and old in hits[0].source, (name, text)


# ----------------------------------------------------------------------------------------------------
# the runs, at classroom size


def snapshot(folder):
    """{relative path: (size, mtime_ns)} of every file under folder."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def classroom(tmp_path_factory):
    """A finished classroom world (world, notebooks 01-04, caption features) and its notebooks' parameters."""
    from studies import chain, lesson

    given = os.environ.get("PDS_TEST_LESSON")
    out = given and ROOT / given
    if not out:
        out = tmp_path_factory.mktemp("classroom") / "lesson"
        lesson.write_parameters(out)
        chain.run(lesson.commands(out)[:6], lesson.ENV)  # the world, 01-04, text_features: not 05 nor the book
    return out, lesson.parameters(out)


@pytest.mark.slow
@pytest.mark.parametrize("exercise", list(EXERCISES), ids=[f"{n}-{k}" for n, k in EXERCISES])
def test_the_exercise_runs_as_written_at_classroom_size(exercise, classroom, tmp_path, monkeypatch):
    world, params = classroom
    monkeypatch.delenv("PDS_LESSON", raising=False)
    monkeypatch.setenv("PDS_PROGRESS", "0")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PDS_NUM_THREADS", "1")
    guarded = [world, ROOT / "results" / "evaluate"]
    before = [snapshot(f) for f in guarded]
    for step, (name, changes, edits) in enumerate(EXERCISES[exercise]):
        nb = notebook(name)
        for text, (old, new) in edits.items():
            cell = next(c for c in nb.cells if c.cell_type == "code" and text in c.source)
            cell.source = cell.source.replace(old, new, 1)
        source = tmp_path / f"{step}_{name}.ipynb"
        nbformat.write(nb, source)
        values = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in changes.items()}
        papermill.execute_notebook(str(source), str(tmp_path / f"{step}_{name}.out.ipynb"), kernel_name="python3",
                                   cwd=str(ROOT), progress_bar=False,
                                   parameters=params[name] | values | {"out_dir": str(tmp_path / name)})
        executed = nbformat.read(tmp_path / f"{step}_{name}.out.ipynb", as_version=4)
        stderr = [o.text[:200] for c in executed.cells for o in c.get("outputs", [])
                  if o.get("output_type") == "stream" and o.get("name") == "stderr"]
        assert not stderr, f"{exercise}: {name} wrote to stderr: {stderr}"
    assert [snapshot(f) for f in guarded] == before, f"{exercise} wrote outside its scratch folder"
