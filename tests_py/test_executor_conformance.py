"""CPython's own concurrent.futures thread-pool tests, run against turboloop.ThreadPoolExecutor.

Our interpreter (pyenv 3.11) ships ``test.support`` but not ``test_concurrent_futures``; Debian's
``libpython3.11-testsuite`` has it at ``/usr/lib/python3.11/test/test_concurrent_futures.py``.
This module is both the pytest test and the driver that runs that file:

    python tests_py/test_executor_conformance.py --executor turboloop --json out.json

The driver (always a fresh subprocess) loads the Debian file by path as
``test.test_concurrent_futures``, after replacing ``concurrent.futures.ThreadPoolExecutor`` with the
executor under test -- so ``ThreadPoolMixin.executor_type`` and the tests that name
``futures.ThreadPoolExecutor`` directly both get it, as under ``python -m turboloop``.  The tests
that start a child interpreter (``assert_python_ok('-c', code)``) run that child as
``python -m turboloop -c PRELUDE+code``: the prelude makes the Debian file importable there and
checks that ``concurrent.futures.ThreadPoolExecutor`` is turboloop's.  It runs the thread-pool
classes (``ThreadPool*`` -- including those ``create_executor_tests`` generates with
``ThreadPoolMixin``) and the executor-independent ``FutureTests``, and writes one JSON record per
test (outcome, message, executors created by the test).

The pytest side runs the driver for turboloop and asserts that every failure is listed in
``executor_expected_failures.txt`` (``test id  # reason``; ``BUG:`` reasons are turboloop bugs
reported to the lead) and that every test that made an executor made turboloop's and never the
stdlib's.  It also runs the driver with the stdlib executor, where everything must pass: that
proves the harness itself (patched child interpreters included) is sound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DEBIAN_TEST_FILE = Path("/usr/lib/python3.11/test/test_concurrent_futures.py")
MODULE_NAME = "test.test_concurrent_futures"
HERE = Path(__file__).resolve().parent
# Seconds a test may take before it counts as hung (the slowest pass in ~6 s, plus
# threading_cleanup's own wait); tests listed as hanging get HANG_LIMIT.
DEFAULT_TEST_LIMIT = 45.0
HANG_LIMIT = 8.0
EXPECTED_FILE = HERE / "executor_expected_failures.txt"

# The classes that must be found (a newer or older file that renames them is a harness problem,
# not a silent pass).
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

    spec = importlib.util.spec_from_file_location(MODULE_NAME, str(DEBIAN_TEST_FILE))
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    import test

    test.test_concurrent_futures = module  # type: ignore[attr-defined]

    if executor_name == "turboloop":
        assert module.ThreadPoolMixin.executor_type is turboloop.ThreadPoolExecutor
        assert module.futures.ThreadPoolExecutor is turboloop.ThreadPoolExecutor
        # FutureTests (and the tests that make bare futures) test the future submit() returns.
        module.Future = turboloop._executor.Future

    # Child interpreters: same executor, and the Debian file importable as the tests expect.
    original_assert_python_ok = module.assert_python_ok
    prelude = CHILD_PRELUDE.format(
        module=MODULE_NAME, path=str(DEBIAN_TEST_FILE), check_turboloop=executor_name == "turboloop"
    )

    def patched_assert_python_ok(*args, **env_vars):
        args = list(args)
        assert args[0] == "-c", args
        code = prelude + args[1]
        if executor_name == "turboloop":
            return original_assert_python_ok("-m", "turboloop", "-c", code, *args[2:], **env_vars)
        return original_assert_python_ok("-c", code, *args[2:], **env_vars)

    module.assert_python_ok = patched_assert_python_ok

    classes = {}
    for name, obj in vars(module).items():
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase) and obj.__module__ == MODULE_NAME:
            if name.startswith("ThreadPool") or name == "FutureTests":
                classes[name] = obj
    missing = REQUIRED_CLASSES - set(classes)
    if missing:
        raise SystemExit(f"harness: classes not found in {DEBIAN_TEST_FILE}: {sorted(missing)}")

    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    for name in sorted(classes):
        for case in loader.loadTestsFromTestCase(classes[name]):
            short = case.id().removeprefix(MODULE_NAME + ".")
            if short not in skip and (not only or any(short.startswith(o) for o in only)):
                suite.addTest(case)

    records: list[dict] = []
    out = open(json_path, "a")

    def short_id(test) -> str:
        return test.id().removeprefix(MODULE_NAME + ".")

    class Result(unittest.TestResult):
        def startTest(self, test):
            super().startTest(test)
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
            arm_hang_guard(120)
            record = {
                "id": short_id(test),
                "outcome": self._outcome[0],
                "detail": self._outcome[1][-4000:],
                "seconds": round(time.monotonic() - self._t0, 3),
                "turboloop_executors": counts["turboloop"] - self._counts0["turboloop"],
                "stdlib_executors": counts["stdlib"] - self._counts0["stdlib"],
                "environment_altered": bool(module.support.environment_altered),
            }
            module.support.environment_altered = False
            records.append(record)
            out.write(json.dumps(record) + "\n")
            out.flush()
            print(f"{record['outcome']:5} {record['seconds']:6.2f}s {record['id']}", file=sys.stderr, flush=True)

    result = Result()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        suite.run(result)
    # Module-level fixtures' errors (setUpModule / cleanups) are recorded without a test.
    for test, trace in result.errors:
        if not hasattr(test, "id") or not any(r["id"] == short_id(test) for r in records):
            record = {"id": str(test), "outcome": "error", "detail": trace[-4000:], "seconds": 0,
                      "turboloop_executors": 0, "stdlib_executors": 0, "environment_altered": False}
            out.write(json.dumps(record) + "\n")
    for w in caught:
        out.write(json.dumps({"warning": f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"}) + "\n")
    out.write(json.dumps({"done": True, "counts": counts}) + "\n")
    out.close()
    return 0


# ----------------------------------------------------------------------------------------------
# pytest side
# ----------------------------------------------------------------------------------------------


def load_expected(path: Path = EXPECTED_FILE) -> dict[str, str]:
    """``test id  # reason`` lines; a reason is required."""
    expected: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        test_id, sep, reason = line.partition("#")
        if not sep or not reason.strip():
            raise ValueError(f"{path.name}:{number}: an expected failure needs '# reason': {raw!r}")
        expected[test_id.strip()] = reason.strip()
    return expected


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
        not DEBIAN_TEST_FILE.exists(),
        reason=f"{DEBIAN_TEST_FILE} is absent (Debian package libpython3.11-testsuite not installed)",
    )

    def test_expected_failures_file_is_well_formed():
        for test_id in load_expected():
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
