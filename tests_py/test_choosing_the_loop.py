"""How a program gets turboloop's loop, on every Python: importing turboloop, turboloop.run() and
``python -m turboloop`` never warn; turboloop.install() warns exactly where asyncio's own
set_event_loop_policy() does (3.14+, where policies are deprecated), and works where policies exist.
Each case runs in a fresh interpreter with warnings as errors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import warnings

import pytest

import turboloop


def python(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "PYTHONDEVMODE")}
    return subprocess.run(
        [sys.executable, "-W", "error", *args], env=env, capture_output=True, text=True, timeout=60
    )


def stock_policy_setter_warns() -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.set_event_loop_policy(None)
    return any(issubclass(w.category, DeprecationWarning) for w in caught)


def test_import_and_run_give_no_warning():
    code = (
        "import asyncio, turboloop\n"
        "async def main(): return type(asyncio.get_running_loop()).__name__\n"
        "print(turboloop.run(main()))\n"
    )
    proc = python("-c", code)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "Loop\n", "")


def test_runner_gives_turboloop_everywhere_without_a_warning():
    code = (
        "import asyncio\n"
        "async def main(): return type(asyncio.get_running_loop()).__module__\n"
        "with asyncio.Runner() as runner: in_runner = runner.run(main())\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.close()\n"
        "print(asyncio.run(main()), in_runner, type(loop).__module__)\n"
    )
    proc = python("-m", "turboloop", "-c", code)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "turboloop turboloop turboloop\n", "")


@pytest.mark.skipif(not hasattr(turboloop, "EventLoopPolicy"), reason="asyncio has no loop policies here")
def test_install_warns_as_asyncio_does_and_works():
    code = (
        "import asyncio, warnings, turboloop\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    turboloop.install()\n"
        "print([(w.category.__name__, w.filename == '<string>') for w in caught])\n"
        "async def main(): return type(asyncio.get_running_loop()).__module__\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore', DeprecationWarning)\n"
        "    print(asyncio.run(main()))\n"
    )
    proc = python("-c", code)
    assert proc.returncode == 0, proc.stderr
    # The warning points at the caller's line, as asyncio's does.
    expected = "[('DeprecationWarning', True)]" if stock_policy_setter_warns() else "[]"
    assert proc.stdout.splitlines() == [expected, "turboloop"]
