"""Project-level contracts: import hygiene, set-up commands, environment.yml in sync with pyproject."""

from __future__ import annotations

import re

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.helpers.shared import ROOT

CONDA_NAMES = {"torch": "pytorch"}


def _pyproject_requirements() -> dict[str, Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for items in meta["optional-dependencies"].values():
        reqs += [r for r in items if not r.startswith("anysat-explorer")]
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "conda-forge" in env["channels"]
    conda = {}
    pip = None
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip = dep["pip"]
            continue
        name, _, spec = re.match(r"([A-Za-z0-9_.\-]+)(.*)", dep).group(1, 0, 2)
        conda[name.lower()] = spec
    for name, req in _pyproject_requirements().items():
        conda_name = CONDA_NAMES.get(name, name)
        assert conda_name in conda, f"{name} from pyproject.toml is missing in environment.yml"
        assert SpecifierSet(conda[conda_name]) == req.specifier, f"{name}: {conda[conda_name]} vs {req.specifier}"
    assert env["dependencies"][-1] == {"pip": pip} and pip[-1].startswith("-e ")


def test_readme_shows_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", setup, flags=re.DOTALL)
    commands = [line.split("#")[0].strip() for b in blocks for line in b.splitlines() if line.strip()]
    assert commands == ["make app", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^app:", makefile, re.MULTILINE) and re.search(r"^test:", makefile, re.MULTILINE)
    assert "-m venv" in makefile and "torch==2.13.0" in makefile


def test_ci_runs_make_test():
    run = (ROOT / ".ci" / "run").read_text()
    assert "make test" in run


def test_make_app_serves_the_explorer():
    makefile = (ROOT / "Makefile").read_text()
    rule = makefile.split("\napp:", 1)[1].split("\n\n", 1)[0]
    assert "panel serve app" in rule and "--address 127.0.0.1" in rule


def test_command_line_demo_runs(capsys):
    from anysat_core.demo import main  # python -m anysat_core.demo, on the test-size model

    assert main(["--size", "test"]) == 0
    out = capsys.readouterr().out
    assert "dense[s2]      -> (2, 6, 6, 128)" in out and "EPSG:32631" in out
