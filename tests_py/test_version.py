"""The version has one source, turboloop.__version__, and the installed metadata agrees with it."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import turboloop

ROOT = Path(__file__).resolve().parents[1]


def test_installed_metadata_version_is_the_package_version() -> None:
    assert importlib.metadata.version("turboloop") == turboloop.__version__


def test_version_is_a_release_number() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", turboloop.__version__), turboloop.__version__


def test_pyproject_reads_the_version_from_the_package() -> None:
    # A static version in pyproject.toml would be a second source that can drift.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    provider = pyproject["tool"]["scikit-build"]["metadata"]["version"]
    assert provider["provider"] == "scikit_build_core.metadata.regex"
    assert (ROOT / provider["input"]).resolve() == (ROOT / "python/turboloop/__init__.py").resolve()
