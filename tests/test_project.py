"""Packaging: pyproject.toml, environment.yml and requirements.lock describe the same environment, and
`make install` checks the disk before it builds one."""

import platform
import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from pds.paths import ROOT


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


def test_environment_yml_lists_the_pyproject_dependencies():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    pip = [p for p in pip if not p.startswith("-e")]
    assert sorted(map(_name, pip)) == sorted(map(_name, _pyproject()))
    # the same pins where pyproject pins (torch / torchvision must come from the local wheels)
    pins = {_name(r): r.replace(" ", "") for r in _pyproject() if "==" in r}
    assert pins == {_name(r): r.replace(" ", "") for r in pip if "==" in r}


def test_lock_pins_every_dependency_exactly():
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[_name(name)] = version
    for req in _pyproject():
        assert _name(req) in lock, f"{req} is missing from requirements.lock (run make lock)"
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"


def test_install_refuses_a_full_disk_before_creating_the_venv(tmp_path):
    # The check must run before `python -m venv`: a half-built .venv on a full disk is what it prevents.
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    # PYTHON=false: were the check missing, the recipe fails at once instead of installing for real
    res = subprocess.run(["make", "install", "MIN_FREE_GB=1000000", "PYTHON=false"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert res.returncode != 0
    assert "a new .venv needs about 1000000 GB free here" in res.stderr and "free disk space" in res.stderr
    assert not (tmp_path / ".venv").exists()


@pytest.mark.skipif(shutil.which("make") is None or platform.machine() != "x86_64", reason="needs make on x86_64")
def test_make_pins_the_cpu_kernels_to_avx2_for_every_recipe_and_lets_a_user_override():
    """The pin that made an AVX-512 machine reproduce dvc.lock byte for byte (docs/reproducibility.md) reaches the
    commands make runs; a value given on the command line wins."""
    probe = "printenv ATEN_CPU_CAPABILITY ONEDNN_MAX_CPU_ISA OPENBLAS_CORETYPE"

    def env(*extra):
        run = subprocess.run(["make", "--no-print-directory", "-s", "-f", "Makefile", "-f", "-", "probe", *extra],
                             input=f"probe:\n\t{probe}\n", cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        return run.stdout.split()

    assert env() == ["avx2", "AVX2", "Haswell"]
    assert env("ATEN_CPU_CAPABILITY=default")[0] == "default"
