"""CPython's own concurrent.futures thread-pool tests, run against turboloop.ThreadPoolExecutor.

The tests are the running interpreter's ``test.test_concurrent_futures``: a file up to 3.11, a
package (``util``, ``executor``, ``test_thread_pool``, ``test_wait``, ...) from 3.12 on.  They are
taken from the interpreter's own ``test`` package if it has them, else from Debian's
``libpython3.X-testsuite`` in ``/usr/lib/python3.X/test`` (our pyenv 3.11 ships ``test.support``
but not ``test_concurrent_futures``).  This module is both the pytest test and the driver that
runs them:

    python tests_py/test_executor_conformance.py --executor turboloop --json out.json

The driver (always a fresh subprocess) loads the file or package by path as
``test.test_concurrent_futures`` (and every ``test_*`` module of the package), after replacing
``concurrent.futures.ThreadPoolExecutor`` with the executor under test -- so
``ThreadPoolMixin.executor_type`` and the tests that name ``futures.ThreadPoolExecutor`` directly
both get it, as under ``python -m turboloop``.  The tests that start a child interpreter
(``assert_python_ok('-c', code)``) run that child as ``python -m turboloop -c PRELUDE+code``: the
prelude makes the suite importable there and checks that ``concurrent.futures.ThreadPoolExecutor``
is turboloop's.  It runs the thread-pool classes (``ThreadPool*`` -- including those
``create_executor_tests`` generates with ``ThreadPoolMixin``) and the executor-independent
``FutureTests``, and writes one JSON record per test (outcome, message, executors created by the
test).  Test ids are ``Class.test_name`` in both layouts.

The pytest side runs the driver for turboloop and asserts that every failure is listed in
``executor_expected_failures.txt`` (``test id  # reason``, or ``test id  # [3.13, 3.14+] reason``
for a failure of those Python versions only, ``3.14+`` meaning 3.14 and later; ``BUG:`` reasons
are turboloop bugs reported to the lead) and that every test that made an executor made
turboloop's and never the stdlib's.  It also runs the driver with the stdlib executor, where
everything must pass: that proves the harness itself (patched child interpreters included) is
sound.  Forking with threads running warns (DeprecationWarning) from 3.12 on, with either pool:
that warning alone is ignored.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

MODULE_NAME = "test.test_concurrent_futures"
HERE = Path(__file__).resolve().parent
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
# Seconds a test may take before it counts as hung (the slowest pass in ~6 s, plus
# threading_cleanup's own wait); tests listed as hanging get HANG_LIMIT.
DEFAULT_TEST_LIMIT = 45.0
HANG_LIMIT = 8.0
EXPECTED_FILE = HERE / "executor_expected_failures.txt"


def find_suite() -> Path | None:
    """The running Python's test_concurrent_futures: its package's __init__.py, or the file."""
    for test_dir in (Path(sysconfig.get_path("stdlib")) / "test", Path(f"/usr/lib/python{VERSION}/test")):
        for candidate in (test_dir / "test_concurrent_futures" / "__init__.py",
                          test_dir / "test_concurrent_futures.py"):
            if candidate.exists():
                return candidate
    return None


SUITE = find_suite()

# The classes that must be found, in either layout (a version that renames them is a harness
# problem, not a silent pass).
REQUIRED_CLASSES = {
    "ThreadPoolShutdownTest",
    "ThreadPoolWaitTests",
    "ThreadPoolAsCompletedTest",
    "ThreadPoolExecutorTest",
    "ThreadPoolInitializerTest",
    "ThreadPoolFailingInitializerTest",
    "FutureTests",
}

# Prepended to the code of every child interpreter a test starts.  It runs at the top of the
# child's __main__ (the tests' code starts with an unindented ``if 1:``).
CHILD_PRELUDE = """\
import importlib.util as _iu, sys as _sys
if {module!r} not in _sys.modules:
    _spec = _iu.spec_from_file_location({module!r}, {path!r})
    _mod = _iu.module_from_spec(_spec)
    _sys.modules[{module!r}] = _mod
    _spec.loader.exec_module(_mod)
import concurrent.futures as _cf
if {check_turboloop!r} and not _cf.ThreadPoolExecutor.__module__.startswith("turboloop"):
    raise SystemExit("harness: the child's ThreadPoolExecutor is not turboloop's")
del _iu, _sys, _cf
"""


# ----------------------------------------------------------------------------------------------
# Driver (runs in its own interpreter)
# ----------------------------------------------------------------------------------------------


def _driver(executor_name: str, json_path: str, only: list[str], skip: set[str], limits: dict[str, float]) -> int:
    import concurrent.futures
    import concurrent.futures.thread
    import faulthandler
    import importlib.util
    import threading
    import unittest
    import warnings

    # A test that hangs dumps every thread's stack and ends the driver (exit status 1); the
    # "start" record tells the parent which test it was, and the parent runs the rest.
    def arm_hang_guard(seconds: float) -> None:
        faulthandler.dump_traceback_later(seconds, exit=True)

    arm_hang_guard(120)

    stdlib_cls = concurrent.futures.thread.ThreadPoolExecutor
    counts = {"turboloop": 0, "stdlib": 0}
    lock = threading.Lock()

    original_stdlib_init = stdlib_cls.__init__

    def counting_stdlib_init(self, *args, **kwargs):
        # turboloop's subclass never calls the stdlib __init__: this counts stdlib pools only.
        with lock:
            counts["stdlib"] += 1
        original_stdlib_init(self, *args, **kwargs)

    stdlib_cls.__init__ = counting_stdlib_init

    if executor_name == "turboloop":
        import turboloop

        tl_cls = turboloop.ThreadPoolExecutor
        original_tl_init = tl_cls.__init__

        def counting_tl_init(self, *args, **kwargs):
            with lock:
                counts["turboloop"] += 1
            original_tl_init(self, *args, **kwargs)

        tl_cls.__init__ = counting_tl_init
        # What `python -m turboloop` does: every concurrent.futures.ThreadPoolExecutor is ours.
        concurrent.futures.ThreadPoolExecutor = tl_cls
        concurrent.futures.thread.ThreadPoolExecutor = tl_cls

    spec = importlib.util.spec_from_file_location(MODULE_NAME, str(SUITE))
    package = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = package
    spec.loader.exec_module(package)
    import test
    from test import support

    test.test_concurrent_futures = package  # type: ignore[attr-defined]
    if spec.submodule_search_locations:
        for path in sorted(SUITE.parent.glob("test_*.py")):
            try:
                importlib.import_module(f"{MODULE_NAME}.{path.stem}")
            except unittest.SkipTest:
                pass  # e.g. test_interpreter_pool without subinterpreters: none of ours
    modules = [m for name, m in sorted(sys.modules.items())
               if name == MODULE_NAME or name.startswith(MODULE_NAME + ".")]

    if executor_name == "turboloop":
        # FutureTests (and the tests that make bare futures) test the future submit() returns.
        replaced = 0
        for module in modules:
            if vars(module).get("Future") is concurrent.futures.Future:
                module.Future = turboloop._executor.Future
                replaced += 1
        assert replaced, "harness: no module of the suite names Future"

    # Child interpreters: same executor, and the suite importable as the tests expect.
    prelude = CHILD_PRELUDE.format(
        module=MODULE_NAME, path=str(SUITE), check_turboloop=executor_name == "turboloop"
    )

    def patch_assert_python_ok(module):
        original = module.assert_python_ok

        def patched_assert_python_ok(*args, **env_vars):
            args = list(args)
            assert args[0] == "-c", args
            code = prelude + args[1]
            if executor_name == "turboloop":
                return original("-m", "turboloop", "-c", code, *args[2:], **env_vars)
            return original("-c", code, *args[2:], **env_vars)

        module.assert_python_ok = patched_assert_python_ok

    patched = [m for m in modules if hasattr(m, "assert_python_ok")]
    assert patched, "harness: no module of the suite starts child interpreters"
    for module in patched:
        patch_assert_python_ok(module)

    classes: dict[str, type] = {}
    for module in modules:
        for name, obj in vars(module).items():
            if (isinstance(obj, type) and issubclass(obj, unittest.TestCase) and obj.__module__ == module.__name__
                    and (name.startswith("ThreadPool") or name == "FutureTests")):
                # Ids are Class.test in both layouts: a class name must be unique.
                assert name not in classes, f"harness: {name} is in two modules"
                classes[name] = obj
    missing = REQUIRED_CLASSES - set(classes)
    if missing:
        raise SystemExit(f"harness: classes not found in {SUITE}: {sorted(missing)}")
    for name, cls in classes.items():
        if name.startswith("ThreadPool"):
            assert cls.executor_type is concurrent.futures.ThreadPoolExecutor, (name, cls.executor_type)

    def short_id(test) -> str:
        return test.id().removeprefix(type(test).__module__ + ".")

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for cls in sorted(classes.values(), key=lambda c: (c.__module__, c.__name__)):
        for case in loader.loadTestsFromTestCase(cls):
            short = short_id(case)
            if short not in skip and (not only or any(short.startswith(o) for o in only)):
                suite.addTest(case)

    out = open(json_path, "a")

    class Result(unittest.TestResult):
        in_test = False

        def startTest(self, test):
            super().startTest(test)
            self.in_test = True
            self._t0 = time.monotonic()
            self._counts0 = dict(counts)
            self._outcome = ("pass", "")
            out.write(json.dumps({"start": short_id(test)}) + "\n")
            out.flush()
            arm_hang_guard(limits.get(short_id(test), DEFAULT_TEST_LIMIT))

        def _set(self, outcome, detail=""):
            # Keep the first failure; a later error in tearDown is appended.
            if self._outcome[0] == "pass":
                self._outcome = (outcome, detail)
            else:
                self._outcome = (self._outcome[0], self._outcome[1] + "\n--- then ---\n" + detail)

        def addError(self, test, err):
            super().addError(test, err)
            if not self.in_test:
                # A module or class fixture's error (setUpModule, cleanups): a record of its own.
                record = {"id": str(test), "outcome": "error", "detail": self._exc_info_to_string(err, test)[-4000:],
                          "seconds": 0, "turboloop_executors": 0, "stdlib_executors": 0, "environment_altered": False}
                out.write(json.dumps(record) + "\n")
                return
            self._set("error", self._exc_info_to_string(err, test))

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._set("fail", self._exc_info_to_string(err, test))

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self._set("skip", reason)

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                failed = issubclass(err[0], test.failureException)
                self._set("fail" if failed else "error", self._exc_info_to_string(err, test))

        def stopTest(self, test):
            super().stopTest(test)
            self.in_test = False
            arm_hang_guard(120)
            record = {
                "id": short_id(test),
                "outcome": self._outcome[0],
                "detail": self._outcome[1][-4000:],
                "seconds": round(time.monotonic() - self._t0, 3),
                "turboloop_executors": counts["turboloop"] - self._counts0["turboloop"],
                "stdlib_executors": counts["stdlib"] - self._counts0["stdlib"],
                "environment_altered": bool(support.environment_altered),
            }
            support.environment_altered = False
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(f"{record['outcome']:5} {record['seconds']:6.2f}s {record['id']}", file=sys.stderr, flush=True)

    result = Result()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Forking while other threads run warns from 3.12 on, whatever the pool (3.15's suite
        # silences it itself).
        warnings.filterwarnings("ignore", r"This process \(pid=\d+\) is multi-threaded, use of fork\(\)",
                                DeprecationWarning)
        suite.run(result)
    for w in caught:
        out.write(json.dumps({"warning": f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"}) + "\n")
    out.write(json.dumps({"done": True, "counts": counts}) + "\n")
    out.close()
    return 0


# ----------------------------------------------------------------------------------------------
# pytest side
# ----------------------------------------------------------------------------------------------


def load_expected(path: Path = EXPECTED_FILE, version: str | None = VERSION) -> dict[str, str]:
    """``test id  # reason`` lines; a reason is required.  A reason that starts with
    ``[3.13, 3.14+]`` applies to those versions only (``3.14+``: 3.14 and later); the entries for
    another ``version`` are left out (``version=None``: all entries)."""
    expected: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        test_id, sep, reason = line.partition("#")
        reason = reason.strip()
        if not sep or not reason:
            raise ValueError(f"{path.name}:{number}: an expected failure needs '# reason': {raw!r}")
        applies = True
        if reason.startswith("["):
            tags, _, reason = reason[1:].partition("]")
            tags = [t.strip() for t in tags.split(",")]
            if not reason.strip() or not all(re.fullmatch(r"3\.\d+\+?", t) for t in tags):
                raise ValueError(f"{path.name}:{number}: versions are [3.X, 3.Y+] before a reason: {raw!r}")
            if version is not None:
                applies = any(version == t or (t.endswith("+") and _as_tuple(version) >= _as_tuple(t[:-1]))
                              for t in tags)
        if applies:
            expected[test_id.strip()] = reason.strip()
    return expected


def _as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def run_driver(
    executor_name: str, tmp_path: Path, limits: dict[str, float] | None = None, budget: float = 105.0
) -> tuple[list[dict], list[str], dict]:
    """Run every test; a test that hangs is recorded as "hang" and the driver runs the rest.

    Returns the per-test records, the warnings seen and the executor counts of the last run.
    """
    limits = limits or {}
    json_path = tmp_path / f"{executor_name}.jsonl"
    deadline = time.monotonic() + budget
    hung: dict[str, str] = {}
    while True:
        done: set[str] = set()
        if json_path.exists():
            done = {json.loads(l)["id"] for l in json_path.read_text().splitlines() if '"outcome"' in l}
        command = [sys.executable, str(Path(__file__).resolve()), "--executor", executor_name,
                   "--json", str(json_path)]
        for test_id in sorted(done | set(hung)):
            command += ["--skip", test_id]
        for test_id, seconds in limits.items():
            command += ["--limit", f"{test_id}={seconds}"]
        proc = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path),
                              timeout=max(5.0, deadline - time.monotonic()))
        lines = [json.loads(l) for l in json_path.read_text().splitlines()] if json_path.exists() else []
        if proc.returncode == 0 and lines and lines[-1].get("done"):
            break
        started = [l["start"] for l in lines if "start" in l]
        finished = {l["id"] for l in lines if "outcome" in l}
        last = started[-1] if started else None
        assert last is not None and last not in finished and last not in hung, (
            f"driver exited {proc.returncode} outside a test\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
        )
        hung[last] = proc.stderr[-6000:]

    records, warnings_seen, final = [], [], {}
    for item in lines:
        if "warning" in item:
            warnings_seen.append(item["warning"])
        elif "done" in item:
            final = item
        elif "outcome" in item:
            records.append(item)
    for test_id, stderr in hung.items():
        records.append({"id": test_id, "outcome": "hang", "detail": stderr, "seconds": None,
                        "turboloop_executors": int(executor_name == "turboloop"),
                        "stdlib_executors": int(executor_name == "stdlib"), "environment_altered": False})
    # Executors made by the tests, over every driver run (one per hang).
    counts = {
        "turboloop": sum(r["turboloop_executors"] for r in records),
        "stdlib": sum(r["stdlib_executors"] for r in records) + final["counts"]["stdlib"],
    }
    return records, warnings_seen, counts


def _summary(records: list[dict]) -> str:
    return "\n\n".join(
        f"{r['id']}: {r['outcome']}\n{r['detail']}" for r in records if r["outcome"] in FAILED
    )


FAILED = ("fail", "error", "hang")

if __name__ != "__main__":
    import pytest

    pytestmark = pytest.mark.skipif(
        SUITE is None,
        reason=f"no test_concurrent_futures for Python {VERSION} (Debian package libpython{VERSION}-testsuite)",
    )

    def test_expected_failures_file_is_well_formed():
        for test_id in load_expected(version=None):
            assert test_id.split(".")[0] in REQUIRED_CLASSES, test_id

    def test_cpython_executor_tests_on_turboloop(tmp_path):
        expected = load_expected()
        limits = {i: HANG_LIMIT for i, reason in expected.items() if "(hang)" in reason}
        records, warnings_seen, counts = run_driver("turboloop", tmp_path, limits)
        ids = {r["id"] for r in records}
        assert len(records) > 60, f"too few tests ran: {len(records)}"
        failed = {r["id"]: r for r in records if r["outcome"] in FAILED}

        unexpected = [r for i, r in failed.items() if i not in expected]
        assert not unexpected, "unexpected failures on turboloop:\n\n" + _summary(unexpected)

        stale = sorted(i for i in expected if i not in ids)
        assert not stale, f"executor_expected_failures.txt names tests that did not run: {stale}"
        fixed = sorted(i for i, reason in expected.items() if i not in failed and "(flaky)" not in reason)
        assert not fixed, f"listed as expected failures but passed (remove them from the list): {fixed}"

        # The executor under test was turboloop's: no stdlib pool anywhere, and every
        # thread-pool test that made a pool made ours.
        assert counts["stdlib"] == 0, counts
        assert counts["turboloop"] >= 50, counts
        assert all(r["stdlib_executors"] == 0 for r in records), [r["id"] for r in records if r["stdlib_executors"]]
        users = [r for r in records if r["id"].startswith("ThreadPool") and r["outcome"] != "skip"]
        assert all(r["turboloop_executors"] >= 1 for r in users), [
            r["id"] for r in users if r["turboloop_executors"] < 1
        ]

        # No warning at all (ResourceWarning, unraisable, ...), no leaked threads, except from
        # tests that are expected to fail anyway.
        assert not warnings_seen, warnings_seen
        altered = [r["id"] for r in records if r["environment_altered"] and r["id"] not in expected]
        assert not altered, f"tests left threads behind (threading_cleanup): {altered}"

    def test_harness_passes_with_the_stdlib_executor(tmp_path):
        """The same harness on the stdlib pool: proves failures above are turboloop's own."""
        records, warnings_seen, counts = run_driver("stdlib", tmp_path)
        failed = [r for r in records if r["outcome"] in FAILED]
        assert not failed, _summary(failed)
        assert len(records) > 60, len(records)
        assert counts["turboloop"] == 0 and counts["stdlib"] >= 50, counts
        assert not warnings_seen, warnings_seen
        altered = [r["id"] for r in records if r["environment_altered"]]
        assert not altered, altered


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", choices=("turboloop", "stdlib"), default="turboloop")
    parser.add_argument("--json", required=True, help="where to write one JSON record per line")
    parser.add_argument("--only", action="append", default=[], help="run only ids starting with this")
    parser.add_argument("--skip", action="append", default=[], help="a test id not to run")
    parser.add_argument("--limit", action="append", default=[], help="ID=SECONDS: that test's hang limit")
    ns = parser.parse_args()
    limits = {k: float(v) for k, _, v in (item.rpartition("=") for item in ns.limit)}
    sys.exit(_driver(ns.executor, ns.json, ns.only, set(ns.skip), limits))
