"""``python -m turboloop [-c CODE | -m MODULE | script.py] [args]`` runs the program as ``python`` does.

Each case runs the same program twice -- with plain ``python`` and with ``python -m turboloop`` --
and compares what the program sees (``sys.argv``, ``sys.path[0]``, ``__name__``, ``__file__``,
``__spec__``, ``__package__``, ``sys.modules['__main__']``), its output, exit status and final
stderr line.  On top of that, under the runner ``asyncio.run`` must run on turboloop's loop,
through turboloop's policy, and ``concurrent.futures.ThreadPoolExecutor`` must be turboloop's pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

INFO = textwrap.dedent(
    """\
    import asyncio, concurrent.futures, json, sys

    async def _loop_type():
        return type(asyncio.get_running_loop())

    def _name(cls):
        return f"{cls.__module__}.{cls.__qualname__}"

    _spec = globals().get("__spec__")
    print(json.dumps({
        "argv": sys.argv,
        "path0": sys.path[0],
        "name": __name__,
        "file": globals().get("__file__"),
        "spec": getattr(_spec, "name", None),
        "package": globals().get("__package__"),
        "main_is_this_module": sys.modules["__main__"].__dict__ is globals(),
        "loop": _name(asyncio.run(_loop_type())),
        "new_event_loop": _name(type(asyncio.new_event_loop())),
        "policy": _name(type(asyncio.get_event_loop_policy())),
        "pool": _name(concurrent.futures.ThreadPoolExecutor),
    }))
    """
)

# What the runner is allowed (and required) to change.
TURBO_KEYS = ("loop", "new_event_loop", "policy", "pool")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE", "PYTHONWARNINGS")}
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run(args: list[str], cwd: Path, turbo: bool) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *(["-m", "turboloop"] if turbo else []), *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60)


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def both(args: list[str], cwd: Path):
    return run(args, cwd, turbo=False), run(args, cwd, turbo=True)


def info_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_info(plain: subprocess.CompletedProcess, turbo: subprocess.CompletedProcess) -> dict:
    expected, actual = info_of(plain), info_of(turbo)
    for key in TURBO_KEYS:
        expected.pop(key)
    seen = {key: actual.pop(key) for key in TURBO_KEYS}
    assert actual == expected
    assert seen["loop"] == "turboloop.Loop", seen
    assert seen["new_event_loop"] == "turboloop.Loop", seen
    assert seen["policy"] == "turboloop.EventLoopPolicy", seen
    return seen


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder holding a script, a module, a package with __main__, and a sub-folder to run from."""
    (tmp_path / "info_script.py").write_text(INFO)
    (tmp_path / "info_mod.py").write_text(INFO)
    pkg = tmp_path / "info_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(INFO)
    (pkg / "sub.py").write_text(INFO)
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


# ----------------------------------------------------------------------------------------------
# What the program sees
# ----------------------------------------------------------------------------------------------


def test_dash_c(project):
    compare_info(*both(["-c", INFO, "a", "-m", "--flag"], project))


def test_dash_m_module(project):
    compare_info(*both(["-m", "info_mod", "a", "-c", "x"], project))


def test_dash_m_package_main(project):
    compare_info(*both(["-m", "info_pkg", "arg"], project))


def test_dash_m_submodule(project):
    compare_info(*both(["-m", "info_pkg.sub", "arg"], project))


def test_script(project):
    compare_info(*both(["info_script.py", "a", "-c", "x", "-m", "y"], project))


def test_script_relative_path_from_elsewhere(project):
    compare_info(*both(["../info_script.py", "arg"], project / "elsewhere"))


def test_script_absolute_path(project):
    compare_info(*both([str(project / "info_script.py")], project / "elsewhere"))


def test_script_through_symlink(project):
    link_dir = project / "links"
    link_dir.mkdir()
    (link_dir / "linked.py").symlink_to(project / "info_script.py")
    compare_info(*both(["links/linked.py"], project))


def test_pool_is_turboloops(project):
    seen = compare_info(*both(["-c", INFO], project))
    assert seen["pool"].startswith("turboloop."), f"concurrent.futures.ThreadPoolExecutor is {seen['pool']}"


def test_main_module_pickles(project):
    code = textwrap.dedent(
        """\
        import pickle
        class Point:
            def __init__(self, x):
                self.x = x
        p = pickle.loads(pickle.dumps(Point(3)))
        print(type(p).__module__, type(p).__qualname__, p.x)
        """
    )
    (project / "pickler.py").write_text(code)
    for args in (["-c", code], ["pickler.py"]):
        plain, turbo = both(args, project)
        assert plain.stdout == "__main__ Point 3\n"
        assert (turbo.returncode, turbo.stdout) == (plain.returncode, plain.stdout), turbo.stderr


def test_deprecation_warning_in_main_is_shown(project):
    code = "import warnings\nwarnings.warn('old stuff', DeprecationWarning)\nprint('done')\n"
    plain, turbo = both(["-c", code], project)
    assert "DeprecationWarning: old stuff" in plain.stderr
    assert (turbo.returncode, turbo.stdout, turbo.stderr) == (plain.returncode, plain.stdout, plain.stderr)


def test_stdin_is_passed_through(project):
    code = "import sys; print(sys.stdin.read().upper())"
    cmd = [sys.executable, "-m", "turboloop", "-c", code]
    proc = subprocess.run(cmd, cwd=project, env=_env(), input="hello", capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "HELLO\n"), proc.stderr


# ----------------------------------------------------------------------------------------------
# Exit status and errors
# ----------------------------------------------------------------------------------------------

EXITS = {
    "sys.exit(3)": ("import sys\nsys.exit(3)\n", 3, ""),
    "raise SystemExit(3)": ("raise SystemExit(3)\n", 3, ""),
    "sys.exit(0)": ("import sys\nsys.exit(0)\n", 0, ""),
    "sys.exit()": ("import sys\nsys.exit()\n", 0, ""),
    "sys.exit('message')": ("import sys\nsys.exit('bye now')\n", 1, "bye now"),
    "uncaught ValueError": ("def f():\n    raise ValueError('boom')\nf()\n", 1, "ValueError: boom"),
    "uncaught in asyncio.run": (
        "import asyncio\nasync def main():\n    raise LookupError('inside the loop')\nasyncio.run(main())\n",
        1,
        "LookupError: inside the loop",
    ),
    "SystemExit in asyncio.run": (
        "import asyncio\nasync def main():\n    raise SystemExit(4)\nasyncio.run(main())\n",
        4,
        "",
    ),
    "SyntaxError": ("x = (1,\nprint(x\n", 1, "SyntaxError: '(' was never closed"),
    "KeyboardInterrupt": ("raise KeyboardInterrupt\n", -2, "KeyboardInterrupt"),
}


@pytest.mark.parametrize("form", ["-c", "script", "-m"])
@pytest.mark.parametrize("case", list(EXITS))
def test_exit_status(project, case, form):
    code, expected_rc, expected_last = EXITS[case]
    if form == "-c":
        args = ["-c", code]
    else:
        (project / "prog.py").write_text(code)
        args = ["prog.py"] if form == "script" else ["-m", "prog"]
    plain, turbo = both(args, project)
    assert plain.returncode == expected_rc and last_line(plain.stderr) == expected_last, plain.stderr  # as python
    assert turbo.returncode == plain.returncode, turbo.stderr
    assert turbo.stdout == plain.stdout
    assert last_line(turbo.stderr) == last_line(plain.stderr), turbo.stderr
    if expected_rc == 1 and case != "sys.exit('message')":
        assert "Traceback (most recent call last):" in turbo.stderr or case == "SyntaxError", turbo.stderr
    if case == "uncaught ValueError":
        where = "<string>" if form == "-c" else str(project / "prog.py")
        assert f'File "{where}", line 2, in f' in plain.stderr, plain.stderr
        assert f'File "{where}", line 2, in f' in turbo.stderr, turbo.stderr


def test_missing_module(project):
    plain, turbo = both(["-m", "no_such_module_xyz"], project)
    assert plain.returncode == 1 and "No module named no_such_module_xyz" in plain.stderr
    assert turbo.returncode == plain.returncode, turbo.stderr
    assert "No module named no_such_module_xyz" in turbo.stderr
    assert "Traceback" not in turbo.stderr, turbo.stderr


def test_missing_script(project):
    plain, turbo = both(["no_such_script.py"], project)
    assert plain.returncode == 2 and "No such file or directory" in plain.stderr
    assert turbo.returncode == plain.returncode, turbo.stderr
    assert "no_such_script.py" in turbo.stderr and "No such file or directory" in turbo.stderr, turbo.stderr
    assert "Traceback" not in turbo.stderr, turbo.stderr
