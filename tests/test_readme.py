"""The README's commands stay true: every `make` target it names exists, every `-S key=value` names a
parameter, every file and figure it links exists."""

import re

import yaml

from pds.paths import ROOT

README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def test_make_targets_exist():
    targets = set(re.findall(r"^([a-z][\w-]*):", MAKEFILE, flags=re.M))
    named = set(re.findall(r"`?make ([a-z][\w-]*)", README))
    assert {"repro", "test"} <= named
    assert named <= targets, f"README names make targets that do not exist: {named - targets}"


def test_set_parameters_exist():
    for key in re.findall(r"-S ([\w.]+)=", README):
        section, leaf = key.split(".")
        assert leaf in PARAMS[section], f"README sets {key}, which params.yaml does not have"


def test_linked_files_exist():
    for path in re.findall(r"\]\(((?:results|models)/[^)]+)\)", README):
        assert (ROOT / path).exists(), f"README links {path}, which does not exist"


def test_the_two_commands_come_first():
    first_block = README.split("```bash", 1)[1].split("```", 1)[0]
    assert "make repro" in first_block and "make test" in first_block
