"""``python -m turboloop``: run a program, unchanged, on turboloop.

It makes asyncio's new loops turboloop's (asyncio.new_event_loop(), and so asyncio.run() and
asyncio.Runner(); and the loop policy where asyncio still has policies) and makes
``concurrent.futures.ThreadPoolExecutor`` turboloop's native pool, then runs the program as ``__main__`` the way ``python`` itself would:
``python -m turboloop script.py [args]``, ``-m module [args]`` or ``-c code [args]`` -- the same
``sys.argv``, ``sys.path[0]``, ``__main__`` attributes, tracebacks and exit statuses.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import concurrent.futures.thread
import importlib.machinery
import io
import os
import runpy
import sys
import types
import zipfile
from typing import Any

from turboloop._executor import ThreadPoolExecutor
from turboloop._policy import use_turboloop_everywhere
from turboloop._watchdog import enable_watchdog

USAGE = """usage: python -m turboloop [--watchdog SECONDS] [-m module | -c code | script.py] [args...]

Runs the program as __main__ on turboloop's event loop (and with concurrent.futures'
ThreadPoolExecutor on turboloop's native pool), exactly as `python` would run it.

  --watchdog SECONDS  report each time the event loop is blocked for longer than SECONDS,
                      with the stack of the code that blocks it (as TURBOLOOP_WATCHDOG=SECONDS)
"""


def _use_native_thread_pool() -> None:
    """Programs that make a concurrent.futures.ThreadPoolExecutor get turboloop's."""
    concurrent.futures.ThreadPoolExecutor = ThreadPoolExecutor  # type: ignore[misc]
    concurrent.futures.thread.ThreadPoolExecutor = ThreadPoolExecutor  # type: ignore[misc]


def _fresh_main(**attributes: object) -> dict[str, Any]:
    """A new ``__main__`` module, registered in sys.modules; returns its namespace."""
    main = types.ModuleType("__main__")
    main.__dict__.update(__builtins__=builtins, **attributes)
    sys.modules["__main__"] = main
    return main.__dict__


def _run_code(code: str) -> None:
    namespace = _fresh_main(__loader__=importlib.machinery.BuiltinImporter)
    exec(compile(code, "<string>", "exec"), namespace)


def _run_script(path: str) -> int | None:
    if os.path.isdir(path) or zipfile.is_zipfile(path):
        runpy.run_path(path, run_name="__main__")
        return None
    # python names the script by its absolute path, not normalised, and puts the directory of
    # its real path first on sys.path.
    filename = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    try:
        with io.open_code(filename) as file:
            source = file.read()
    except OSError as exc:
        sys.stderr.write(f"{sys.executable}: can't open file {filename!r}: [Errno {exc.errno}] {exc.strerror}\n")
        return 2
    sys.path[0] = os.path.dirname(os.path.realpath(filename))
    namespace = _fresh_main(
        __file__=filename,
        __cached__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", filename),
    )
    exec(compile(source, filename, "exec"), namespace)
    return None


def _report(exc: BaseException) -> int:
    """Print an uncaught exception as python would, without the runner's own frames."""
    traceback = exc.__traceback__
    while traceback is not None and traceback.tb_frame.f_code.co_filename == __file__:
        traceback = traceback.tb_next
    sys.excepthook(type(exc), exc, traceback)
    return 1


def _take_watchdog_option(argv: list[str]) -> list[str] | str:
    """`argv` without a leading --watchdog option, which it applies; or an error message."""
    if not argv or not argv[0].startswith("--watchdog"):
        return argv
    option, equals, value = argv[0].partition("=")
    if option != "--watchdog":
        return argv
    if not equals:
        if len(argv) < 2:
            return "Argument expected for the --watchdog option"
        value, argv = argv[1], argv[1:]
    try:
        threshold = float(value)
        enable_watchdog(threshold)
    except ValueError:
        return f"--watchdog needs a positive number of seconds (such as 0.1), got {value!r}"
    return argv[1:]


def main(argv: list[str]) -> int:
    """Run the program `argv` describes; return its exit status."""
    remaining = _take_watchdog_option(argv)
    if isinstance(remaining, str):
        sys.stderr.write(f"{remaining}\n{USAGE}")
        return 2
    argv = remaining
    if not argv or argv[0] in ("-h", "--help"):
        (sys.stdout if argv else sys.stderr).write(USAGE)
        return 0 if argv else 2
    option = argv[0]
    if option in ("-m", "-c") and len(argv) < 2:
        sys.stderr.write(f"Argument expected for the {option} option\n{USAGE}")
        return 2
    use_turboloop_everywhere()
    _use_native_thread_pool()
    try:
        if option == "-c":
            sys.argv = ["-c", *argv[2:]]
            sys.path[0] = ""
            _run_code(argv[1])
        elif option == "-m":
            sys.argv = [argv[1], *argv[2:]]
            # What `python -m` itself runs: same argv[0], same messages for a missing module.
            runpy._run_module_as_main(argv[1], alter_argv=True)  # type: ignore[attr-defined]
        else:
            sys.argv = list(argv)
            return _run_script(argv[0]) or 0
    except Exception as exc:
        return _report(exc)
    return 0
