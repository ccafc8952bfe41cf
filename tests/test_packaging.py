"""environment.yml must name the same packages as pyproject.toml, with compatible version ranges."""
import re

import tomllib
import yaml

from conftest import REPO


def _requirements(lines):
    reqs = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", line.strip())
        if match:
            reqs[match.group(1).lower().replace("_", "-")] = match.group(2).replace(" ", "")
    return reqs


def test_environment_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = _requirements(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = _requirements(p for p in pip_section if not p.startswith("-e"))
    assert have == wanted, f"environment.yml pip section {have} differs from pyproject.toml {wanted}"
    assert "-e ." in pip_section


def test_python_range_compatible():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    low = re.search(r">=(\d+\.\d+)", python).group(1)
    assert project["requires-python"] == f">={low}"
