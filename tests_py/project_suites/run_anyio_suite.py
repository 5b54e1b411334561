"""Run anyio's own test suite on stock asyncio and on turboloop, and compare the outcomes.

    python3 tests_py/project_suites/run_anyio_suite.py [--work DIR] [--anyio VERSION] [-- PYTEST ARGS]

Steps: download anyio's sdist (the version installed, by default) from PyPI and unpack its
tests into DIR (default /tmp/turboloop-anyio-suite); make a venv there that sees the system's
packages (turboloop, anyio, pytest, trustme, uvloop) and add the suite's own test dependencies,
pinned; then run the suite twice, unchanged, with anyio_suite_plugin.py: once on the stock loop,
once with turboloop's policy installed.  Only the plain asyncio backend runs (see the plugin),
and tests marked ``network`` are left out, so it runs offline.  The runs are one after another,
since anyio's suite has timing-sensitive tests.

Prints passed/failed/skipped/xfailed for each run and every test whose outcome differs, with the
first line of turboloop's failure.  Exits 0 when turboloop fails no test that passes on stock
asyncio, else 1.
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
# anyio's [dependency-groups] test list and its trio extra (the pytest-plugin tests run inner
# sessions on both backends), less what the system already has (pytest, trustme,
# hypothesis, uvloop): pinned so runs can be compared.
SUITE_DEPENDENCIES = [
    "pytest-mock==3.17.0", "pytest-timeout==2.4.0", "psutil==7.2.2", "blockbuster==1.5.29", "truststore==0.10.5",
    "trio==0.32.0",
]


def run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(cmd, check=True, **kwargs)


def prepare(work: Path, version: str) -> tuple[Path, Path]:
    """The unpacked sdist and the venv's python."""
    work.mkdir(parents=True, exist_ok=True)
    source = work / f"anyio-{version}"
    if not source.is_dir():
        run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
             f"anyio=={version}", "-d", str(work)])
        with tarfile.open(work / f"anyio-{version}.tar.gz") as sdist:
            sdist.extractall(work, filter="data")
    python = work / "venv" / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", "--system-site-packages", str(work / "venv")])
        run([str(python), "-m", "pip", "install", "-q", *SUITE_DEPENDENCIES])
    return source, python


def run_suite(python: Path, source: Path, mode: str, report: Path, extra: list[str]) -> tuple[float, str]:
    env = {**os.environ, "ANYIO_SUITE_LOOP": mode, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    cmd = [str(python), "-m", "pytest", "-p", "anyio_suite_plugin", "-p", "no:cacheprovider", "-m", "not network",
           "-q", f"--junitxml={report}", *extra]
    print(f"+ ANYIO_SUITE_LOOP={mode}", " ".join(cmd), flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=source, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.monotonic() - start
    tail = [line for line in proc.stdout.splitlines() if line.startswith("anyio suite on")]
    return elapsed, (tail[0] if tail else "")


def outcomes(report: Path) -> dict[str, tuple[str, str]]:
    """test id -> (outcome, first line of the failure or skip message)."""
    found = {}
    for case in ET.parse(report).iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = ("failed" if child.tag == "failure" else "error"), child.get("message", "")
            elif child.tag == "skipped":
                kind = child.get("type", "")
                outcome = "xfailed" if kind == "pytest.xfail" else "skipped"
                message = child.get("message", "")
        # A test failing in call and again in teardown appears twice; the worse outcome wins.
        if test_id not in found or outcome in ("failed", "error"):
            found[test_id] = (outcome, message.splitlines()[0] if message else "")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/turboloop-anyio-suite"))
    parser.add_argument("--anyio", default=importlib.metadata.version("anyio"))
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()

    source, python = prepare(args.work, args.anyio)
    results = {}
    for mode in ("asyncio", "turboloop"):
        report = args.work / f"report-{mode}.xml"
        elapsed, loops = run_suite(python, source, mode, report, args.pytest_args)
        results[mode] = outcomes(report)
        counts = collections.Counter(outcome for outcome, _ in results[mode].values())
        print(f"{mode:>9}: {dict(sorted(counts.items()))} in {elapsed:.0f} s; {loops}", flush=True)

    stock, turbo = results["asyncio"], results["turboloop"]
    differ = sorted(t for t in stock.keys() | turbo.keys() if stock.get(t, ("absent",))[0] != turbo.get(t, ("absent",))[0])
    regressions = [t for t in differ if stock.get(t, ("absent",))[0] in ("passed", "xfailed")
                   and turbo.get(t, ("absent",))[0] in ("failed", "error")]
    passed_both = sum(1 for t in stock if stock[t][0] == "passed" and turbo.get(t, ("",))[0] == "passed")
    ran = sum(1 for t in stock if stock[t][0] == "passed")
    print(f"passing on stock asyncio: {ran}; also passing on turboloop: {passed_both}"
          f" ({100 * passed_both / max(ran, 1):.1f}%)")
    for test_id in differ:
        s, t = stock.get(test_id, ("absent", "")), turbo.get(test_id, ("absent", ""))
        print(f"  {test_id}: asyncio {s[0]}, turboloop {t[0]}" + (f" -- {t[1]}" if t[1] else ""))
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
