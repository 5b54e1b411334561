"""The package's annotations and stubs pass ``mypy --strict``, and so does examples/typed_api.py,
a program that uses every public name and pins the types mypy infers with ``assert_type``; the
native module's stub matches the module (mypy's stubtest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "typed_api.py"

pytest.importorskip("mypy", reason="mypy is not installed (pip install mypy; .ci/install does)")


def test_package_and_example_pass_mypy_strict(tmp_path: Path) -> None:
    # MYPYPATH makes mypy check this tree's package, not whatever turboloop is installed.
    env = {**os.environ, "MYPYPATH": str(ROOT / "python")}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"),
         str(ROOT / "python" / "turboloop"), str(EXAMPLE)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_rejects_a_misuse_of_the_api(tmp_path: Path) -> None:
    # The check above is only worth something if the types are precise enough to catch this.
    misuse = tmp_path / "misuse.py"
    misuse.write_text(
        "import turboloop\n"
        "pool = turboloop.ThreadPoolExecutor(min_workers='two')\n"
        "threshold: str | None = turboloop.new_event_loop().get_watchdog()\n"
    )
    env = {**os.environ, "MYPYPATH": str(ROOT / "python")}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), str(misuse)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'misuse.py:2: error: Argument "min_workers"' in result.stdout, result.stdout
    assert "misuse.py:3: error: Incompatible types in assignment" in result.stdout, result.stdout


def test_native_stub_matches_the_native_module(tmp_path: Path) -> None:
    # stubtest imports the installed native module and compares it with this tree's stub.
    env = {**os.environ, "MYPYPATH": str(ROOT / "python")}
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "turboloop._turboloop", "--mypy-config-file", os.devnull,
         "--allowlist", str(ROOT / "tests_py" / "stubtest_allowlist.txt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_typed_api_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "ok", result.stdout
    assert "Event loop blocked for" in result.stderr, result.stderr
