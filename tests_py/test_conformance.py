"""CPython's own ``test.test_asyncio`` suites, run against the loop under test.

One pytest test per CPython module (of those the interpreter ships: they
differ between CPython versions); each module runs in its own subprocess
(``conformance/driver.py``) so a crash or hang cannot take pytest down.
A module's test fails when

* a CPython test fails that is not listed in
  ``conformance/expected_<loop>.txt`` (a regression), or
* no loop of the loop under test was created while the module ran (the
  harness did not actually exercise it), or
* an expected-failure entry of that module is stale: every test it matches
  now passes -- prune it (``harness.py --prune``). Set
  ``CONFORMANCE_STRICT=0`` to only print stale entries instead.

Environment:

``CONFORMANCE_LOOP``     turboloop (default), asyncio (the baseline) or uvloop
``CONFORMANCE_MODULES``  comma/space separated subset of modules
``CONFORMANCE_JOBS``     modules run in parallel (default 1)
``CONFORMANCE_RUN_SLOW`` 1: also run the tests listed in conformance/slow.txt
``CONFORMANCE_TIMEOUT_FACTOR``  multiplies the per-module time limits

Test ids are ``<tag>-<module>`` with tag ``core`` (no I/O), ``io`` (loopback
sockets, pipes, TLS) or ``subprocess``, so ``-k core`` selects the
non-I/O modules. See conformance/README.md.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conformance")


def _load(name: str, filename: str | None = None):
    # Loaded by path under unique names: tests_py is not a package and the
    # helpers are also run as plain scripts in the driver subprocess.
    if _DIR not in sys.path:
        sys.path.insert(0, _DIR)
    spec = importlib.util.spec_from_file_location(name, os.path.join(_DIR, filename or f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


config = _load("conformance_config")
expectations = _load("conformance_expectations")
harness = _load("conformance_harness", "harness.py")

LOOP = harness.selected_loop()
MODULES = harness.selected_modules()
JOBS = int(os.environ.get("CONFORMANCE_JOBS", "1"))
STRICT = os.environ.get("CONFORMANCE_STRICT", "1") != "0"
RUN_SLOW = bool(os.environ.get("CONFORMANCE_RUN_SLOW"))


def _require_test_suite() -> None:
    if importlib.util.find_spec("test.test_asyncio") is None:
        pytest.fail(
            "CPython's test suite (test.test_asyncio) is not installed for this interpreter "
            "(Debian's system Python: apt-get install libpython%d.%d-testsuite)" % sys.version_info[:2],
            pytrace=False,
        )


def test_expected_files_are_well_formed() -> None:
    """Every entry of every data file parses (with its py qualifier), has a reason, and names a
    module we run."""
    problems = []
    paths = [expectations.expected_path(loop) for loop in config.LOOPS]
    paths.append(expectations.slow_path())
    for path in paths:
        try:
            entries = expectations.parse_file(path)
        except expectations.FormatError as exc:
            problems.append(str(exc))
            continue
        for e in entries:
            if e.module not in config.MODULES:
                problems.append(f"{e.where()}: {e.pattern!r}: unknown module {e.module!r}")
    assert not problems, "\n".join(problems)


def test_every_module_is_run_or_listed() -> None:
    """Each test_asyncio module this Python ships is run, or listed in NOT_RUN with the reason."""
    _require_test_suite()
    unlisted = set(harness.shipped_modules()) - set(config.MODULES) - set(config.NOT_RUN)
    assert not unlisted, (
        f"test.test_asyncio modules of Python {sys.version.split()[0]} neither in MODULES nor in "
        f"NOT_RUN (conformance/conformance_config.py): {sorted(unlisted)}"
    )


@pytest.mark.parametrize(
    "module",
    [pytest.param(m, id=f"{config.MODULES[m]['tag']}-{m}") for m in MODULES],
)
def test_cpython_asyncio_module(module: str) -> None:
    if importlib.util.find_spec(LOOP) is None:
        pytest.fail(f"the loop under test, {LOOP!r}, is not importable", pytrace=False)
    _require_test_suite()
    entries = expectations.load(LOOP, run_slow=RUN_SLOW)
    if JOBS > 1:
        run = harness.get_run(LOOP, module, MODULES, JOBS)
    else:
        run = harness.run_module(LOOP, module, run_slow=RUN_SLOW)
    cmp = harness.Comparison(run, entries)
    report = cmp.text()
    if cmp.ok(strict=STRICT):
        print(report)  # shown with -rP / -s: counts, notes, non-strict stale entries
    else:
        hint = ""
        if cmp.unexpected:
            hint += (
                "\n\nCandidate expected_%s.txt lines (replace the raw error by a real reason):\n    %s"
                % (LOOP, "\n    ".join(cmp.suggestions()))
            )
        if cmp.stale and STRICT:
            hint += "\n\nPrune stale entries: python tests_py/conformance/harness.py --loop %s -m %s --prune" % (
                LOOP,
                module,
            )
        pytest.fail(report + hint, pytrace=False)
