"""Contract between dvc.yaml, params.yaml and the notebooks' parameters cells.

"Run All" in Jupyter must reproduce `dvc repro`: every `-p` a stage passes names a declared notebook parameter
whose default equals params.yaml, nothing passed is a bool or a list, and every pds module a notebook imports
is a dependency of its stage.
"""

import ast
import re
import shlex

import nbformat
import pytest
import yaml

from pds.paths import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
NOTEBOOK_STAGES = {name: s for name, s in DVC.items() if "papermill" in s.get("cmd", "")}  # foreach stages: no cmd
STAGE_ORDER = ["embed", "cluster", "match", "synthesize", "evaluate"]


def lookup(dotted):
    node = PARAMS
    for key in dotted.split("."):
        node = node[key]
    return node


def papermill_args(cmd):
    """(input notebook, output notebook, {param: raw value string}) of a papermill command."""
    words = shlex.split(cmd)
    i = words.index("papermill")
    src, dst = words[i + 1], words[i + 2]
    passed = {}
    for j, w in enumerate(words):
        if w == "-p":
            passed[words[j + 1]] = words[j + 2]
    return src, dst, passed


def parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path} must have exactly one cell tagged 'parameters'"
    defaults = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.AnnAssign), f"{path}: parameters cell holds only `name: type = literal` lines"
        defaults[node.target.id] = ast.literal_eval(node.value)
    return defaults


def imported_pds_modules(path):
    nb = nbformat.read(path, as_version=4)
    mods = set()
    for c in nb.cells:
        if c.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(c.source)):
            if isinstance(node, ast.ImportFrom) and node.module == "pds":
                mods |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pds."):
                mods.add(node.module.split(".")[1])
    return mods


def test_stage_names_match_notebooks_params_and_modules():
    assert list(NOTEBOOK_STAGES) == STAGE_ORDER
    for n, name in enumerate(STAGE_ORDER, start=1):
        src, dst, _ = papermill_args(DVC[name]["cmd"])
        assert src == f"notebooks/{n:02d}_{name}.ipynb" and dst == f"results/notebooks/{n:02d}_{name}.ipynb"
        assert name in PARAMS and (ROOT / "pds" / f"{name}.py").exists()
        assert dst in DVC[name]["outs"] or {dst: {"cache": False}} in DVC[name]["outs"]


@pytest.mark.parametrize("stage", STAGE_ORDER)
def test_every_passed_parameter_is_declared_with_the_params_yaml_default(stage):
    src, _, passed = papermill_args(DVC[stage]["cmd"])
    defaults = parameters_cell(ROOT / src)
    for name, raw in passed.items():
        assert name in defaults, f"{stage}: -p {name} is not a parameter of {src}"
        m = re.fullmatch(r"\$\{([\w.]+)\}", raw)
        # a whole ${param} keeps its type; one inside a path (data/raw/${base.dataset}) is spliced in
        value = lookup(m.group(1)) if m else yaml.safe_load(re.sub(r"\$\{([\w.]+)\}", lambda g: str(lookup(g[1])), raw))
        assert not isinstance(value, bool | list | dict), f"{stage}: -p {name} passes a {type(value).__name__}"
        assert value == defaults[name] and type(value) is type(defaults[name]), (
            f"{stage}: {src} default {name}={defaults[name]!r} differs from dvc.yaml/params.yaml {value!r}")
    # every parameter of the notebook is driven by the pipeline, so Run All == dvc repro
    assert set(defaults) == set(passed), f"{stage}: not passed by dvc.yaml: {set(defaults) - set(passed)}"


@pytest.mark.parametrize("stage", STAGE_ORDER)
def test_notebook_and_imported_modules_are_deps(stage):
    src, _, passed = papermill_args(DVC[stage]["cmd"])
    deps = set(DVC[stage]["deps"])
    assert src in deps
    for mod in imported_pds_modules(ROOT / src) - {"paths"}:
        assert f"pds/{mod}.py" in deps or "pds" in deps, f"{stage}: pds/{mod}.py is imported but not a dep"
    outs = {o if isinstance(o, str) else next(iter(o)) for o in DVC[stage]["outs"]}
    for name, raw in passed.items():
        if name.endswith(("_dir", "_root")):
            assert raw in deps | outs, f"{stage}: path {name}={raw} is neither a dep nor an out"


def test_params_leaves_are_scalars():
    for section, values in PARAMS.items():
        if section == "toyworld":  # one entry per world, each of scalar leaves (dvc.yaml's foreach)
            for world, knobs in values.items():
                for key, value in knobs.items():
                    assert isinstance(value, str | int | float), f"params.yaml toyworld.{world}.{key} must be a scalar"
            continue
        for key, value in values.items():
            assert isinstance(value, str | int | float), f"params.yaml {section}.{key} must be a scalar"


def test_every_world_runs_with_the_generator_defaults_and_the_selected_one_exists():
    """Each params.yaml world passes every knob the generator has, and base.dataset names one of them
    (or a real dataset: then it is not a generated world)."""
    import inspect

    from pds.toy import world

    knobs = [p for p in inspect.signature(world.generate_toyworld).parameters if p != "out_dir"]
    for name, entry in PARAMS["toyworld"].items():
        assert set(entry) == set(knobs), f"toyworld.{name}: {set(knobs) ^ set(entry)}"
    today = PARAMS["toyworld"]["toyworld"]
    assert world.Knobs(**{k: v for k, v in today.items() if k in world.Knobs.__dataclass_fields__
                          and k != "caption_mention_rate"}) == world.Knobs()
    assert today["caption_mention_rate"] == "legacy"
    assert PARAMS["base"]["dataset"] in PARAMS["toyworld"]
