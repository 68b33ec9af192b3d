"""The built wheel holds every package of the source tree (discovered, not listed by hand), the
built-in rules with their YAML, the JSON schemas and the py.typed marker."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


def _source_packages() -> set[str]:
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "coherence_diag").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    return found | {"coherence_diag.builtin_rules"}


@pytest.mark.slow
def test_wheel_contains_every_subpackage_and_the_package_data(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    for tree in ("coherence_diag", "rules"):
        shutil.copytree(REPO / tree, src / tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("coherence_diag-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {n[: -len("/__init__.py")].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert packages == _source_packages()
    assert "coherence_diag/py.typed" in names
    rules = {p.name for p in (REPO / "rules").glob("*.yaml")}
    assert rules and {n.rsplit("/", 1)[1] for n in names if n.startswith("coherence_diag/builtin_rules/") and n.endswith(".yaml")} == rules
    schemas = {p.name for p in (REPO / "coherence_diag" / "schemas").glob("*.json")}
    assert {n.rsplit("/", 1)[1] for n in names if n.startswith("coherence_diag/schemas/") and n.endswith(".json")} == schemas
    templates = {p.name for p in (REPO / "coherence_diag" / "render" / "templates").iterdir() if p.is_file()}
    assert templates and {n.rsplit("/", 1)[1] for n in names if n.startswith("coherence_diag/render/templates/")} == templates
