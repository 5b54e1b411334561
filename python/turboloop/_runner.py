"""``python -m turboloop``: run a program, unchanged, on turboloop.

It installs turboloop's loop policy and makes ``concurrent.futures.ThreadPoolExecutor`` turboloop's
native pool, then runs the program as ``__main__`` the way ``python`` itself would:
``python -m turboloop script.py [args]``, ``-m module [args]`` or ``-c code [args]``.
"""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.thread
import os
import runpy
import sys
import types

from turboloop._executor import ThreadPoolExecutor
from turboloop._policy import install

USAGE = """usage: python -m turboloop [-m module | -c code | script.py] [args...]

Runs the program as __main__ on turboloop's event loop (and with concurrent.futures'
ThreadPoolExecutor on turboloop's native pool), exactly as `python` would run it.
"""


def _use_native_thread_pool() -> None:
    """Programs that make a concurrent.futures.ThreadPoolExecutor get turboloop's."""
    concurrent.futures.ThreadPoolExecutor = ThreadPoolExecutor  # type: ignore[misc]
    concurrent.futures.thread.ThreadPoolExecutor = ThreadPoolExecutor  # type: ignore[misc]


def _run_code(code: str) -> None:
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    exec(compile(code, "<string>", "exec"), main.__dict__)


def main(argv: list[str]) -> int:
    """Run the program `argv` describes; return the exit status for usage errors."""
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE) if argv else sys.stderr.write(USAGE)
        return 0 if argv else 2
    option = argv[0]
    if option in ("-m", "-c") and len(argv) < 2:
        sys.stderr.write(f"Argument expected for the {option} option\n{USAGE}")
        return 2
    install()
    _use_native_thread_pool()
    if option == "-c":
        sys.argv = ["-c", *argv[2:]]
        sys.path[0] = ""
        _run_code(argv[1])
    elif option == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.realpath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")
    return 0
