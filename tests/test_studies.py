"""The studies are DVC stages (studies/dvc.yaml) that write only their own folders: none edits params.yaml or a
lock file, none runs git, and a user's uncommitted edit to params.yaml survives a study's command."""

import functools
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from pds.paths import ROOT
from studies.sweep import ABLATIONS

STUDIES = yaml.safe_load((ROOT / "studies" / "dvc.yaml").read_text())
STAGES = STUDIES["stages"]


def _out_paths(stage) -> list[str]:
    return [o if isinstance(o, str) else next(iter(o)) for o in stage.get("outs", [])]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_study_checks_params_first_and_writes_only_build_or_results(name):
    stage = STAGES[name].get("do", STAGES[name])
    assert stage["wdir"] == ".." and stage["cmd"].startswith("python -m pds.config && "), name
    assert "git " not in stage["cmd"] and "dvc exp" not in stage["cmd"], name
    for out in _out_paths(stage):
        assert out.startswith(("build/", "results/")), (name, out)


def test_no_make_target_runs_git_checkout_or_dvc_exp():
    makefile = (ROOT / "Makefile").read_text()
    assert "git checkout" not in makefile and "dvc exp run" not in makefile


@functools.cache
def _resolved() -> dict[str, list[str]]:
    """Every stage of studies/dvc.yaml as DVC resolves it (foreach items and params filled in): name -> outs."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {s.name: [o.def_path for o in s.outs] for s in repo.stage.collect("studies/dvc.yaml")}


def test_every_study_metrics_file_is_listed_for_dvc_metrics():
    listed = {m.removeprefix("../") for m in STUDIES["metrics"]}
    outs = [(name, out) for name, stage_outs in _resolved().items() for out in stage_outs]
    for name, out in outs:
        if out.endswith(".json") and "metrics" in out:
            assert out in listed, (name, out)
        elif name.startswith("mismatch@") and out.startswith("results/"):
            assert f"{out}/metrics.json" in listed, (name, out)
        elif name.startswith(("tm_curve@", "tm_budget@")) and (ROOT / out / "metrics.json").is_file():  # once run
            assert {f"{out}/metrics.json", f"{out}/choice.json"} <= listed, (name, out)
        elif "ablations" in name:  # the variants whose file exists (a stage not yet run may lack one)
            assert {f"{out}/{v}.json" for v in ABLATIONS if (ROOT / out / f"{v}.json").is_file()} <= listed, name
    assert all((ROOT / m).is_file() for m in listed), "a listed metrics file does not exist: DVC reports an error"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_an_uncommitted_params_edit_survives_a_study(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    params = clone / "params.yaml"
    edited = params.read_text().replace("  seeds: 3\n", "  seeds: 2  # a user's uncommitted edit\n")
    assert edited != params.read_text()
    params.write_text(edited)
    lock = (clone / "dvc.lock").read_text()
    env = os.environ | {"PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
                        "PYTHONPATH": str(clone)}
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "--single-item", "studies/dvc.yaml:sweep_summary"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert params.read_text() == edited and (clone / "dvc.lock").read_text() == lock
    assert (clone / "results" / "sweep" / "summary.md").is_file()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_install_refuses_a_linked_venv(tmp_path):
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    other = tmp_path / "other-venv"
    (other / "bin").mkdir(parents=True)
    (tmp_path / ".venv").symlink_to(other)
    done = subprocess.run(["make", "--no-print-directory", "install"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and ".venv is a link to" in done.stderr
    assert sorted(p.name for p in (other / "bin").iterdir()) == []  # nothing written into the linked environment


def _imported(path, seen=None) -> set[str]:
    """The repository modules `path` imports, transitively (pds.* and studies.*), as file paths."""
    import ast

    seen = set() if seen is None else seen
    if path in seen or not (ROOT / path).is_file():
        return seen
    seen.add(path)
    if path.endswith(".ipynb"):
        import json

        cells = json.loads((ROOT / path).read_text())["cells"]
        tree = ast.parse("\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"
                                   and not "".join(c["source"]).lstrip().startswith(("%", "!"))))
    else:
        tree = ast.parse((ROOT / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("pds", "studies"):
            base = node.module.replace(".", "/")
            for alias in node.names:
                sub = f"{base}/{alias.name}.py"
                _imported(sub if (ROOT / sub).is_file() else f"{base}.py", seen)
    return seen


@pytest.mark.parametrize("name", ["lesson", "sweep", "worlds", "worlds_full", "mismatch", "dryrun_real", "seeds",
                                  "seeds_report"])
def test_study_deps_cover_every_module_its_notebooks_and_driver_import(name):
    stage = STAGES[name].get("do", STAGES[name])
    driver = stage["cmd"].split("python -m studies.")[1].split()[0].replace(".", "/")
    notebooks = [] if name.endswith("_report") else [f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("0*.ipynb")]
    needed = set()
    for start in [f"studies/{driver}.py", *notebooks]:
        needed |= _imported(start)
    deps = stage["deps"]
    missing = [m for m in sorted(needed) if not any(m == d or m.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"{name}: imported but not a dependency: {missing}"


def test_the_docs_name_every_study_stage_without_a_lock_entry():
    """docs/reproducibility.md names the study stages whose committed figures have no lock entry yet (or says there
    are none)."""
    locked = set(yaml.safe_load((ROOT / "studies" / "dvc.lock").read_text())["stages"])
    unlocked = sorted(set(_resolved()) - locked)
    text = " ".join((ROOT / "docs" / "reproducibility.md").read_text().split())
    if not unlocked:
        assert "every study stage has its lock entry" in text
        return
    sentence = text[text.index("Today that is"):].split(".")[0]
    assert all(f"`{n}`" in sentence for n in unlocked), (unlocked, sentence)
    assert sentence.count("`") // 2 == len(unlocked), (unlocked, sentence)
