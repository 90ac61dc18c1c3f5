"""The documentation: the site builds with no warning, its generated pages hold what they are generated
from, the README stays a first screen with the two commands, and the wheel ships every page."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVICE_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/retain serve"
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/pytest -q"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    site_dir = tmp_path_factory.mktemp("site")
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert "WARNING" not in result.stderr, result.stderr
    return site_dir


def test_the_site_builds_strictly_with_every_page(site):
    for page in (REPO / "docs").rglob("*.md"):
        relative = page.relative_to(REPO / "docs").with_suffix("")
        folder = relative.parent if relative.name == "index" else relative  # mkdocs' directory URLs
        assert (site / folder / "index.html").is_file(), f"{page} was not built"


def test_the_configuration_page_lists_every_setting_with_its_description(site):
    from app.settings import Settings

    page = (site / "configuration" / "index.html").read_text()
    for name, field in Settings.model_fields.items():
        variable = "DATABASE_URL" if name == "database_url" else f"RETAIN_{name.upper()}"
        assert variable in page, f"{variable} missing from the configuration page"
        assert field.description, f"setting {name} has no description"
    assert "<!-- generated" not in page


def test_the_benchmarks_page_names_every_result_file(site):
    page = (site / "benchmarks" / "index.html").read_text()
    for result in (REPO / "benchmarks" / "results").rglob("*.json"):
        assert result.name in page, f"{result.name} missing from the benchmarks page"


def test_the_readme_is_a_first_screen_with_both_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert SERVICE_COMMAND in readme
    assert TEST_COMMAND in readme


def test_the_wheel_ships_every_page_and_picture():
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    # setuptools expands these globs from the project root, as Path.glob does here.
    shipped = {
        path.relative_to(REPO) for patterns in data_files.values() for glob in patterns for path in REPO.glob(glob)
    }
    documentation = {path.relative_to(REPO) for path in (REPO / "docs").rglob("*") if path.suffix in (".md", ".png")}
    assert documentation - shipped == set(), "pages missing from [tool.setuptools.data-files]"
