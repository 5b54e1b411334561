"""pytest plugin for the sanitizer run (.ci/test-asan-python): keep the cases that run our code.

The behaviour tests are parametrised over the stock loop, uvloop and turboloop, and the executor
tests over the stdlib pool and turboloop's: under ASAN only turboloop's cases exercise the native
code, so the reference cases are deselected.  Tests that cannot hold under ASAN are skipped, each
with its reason.
"""

from __future__ import annotations

import pytest

OURS = "turboloop"
# Parameters naming the implementation under test: only the value OURS is kept.
IMPLEMENTATION_PARAMS = ("loop_name", "loop_factory", "executor_cls", "impl")
# test_seed_examples' modes: "stock" runs the program on asyncio alone.
REFERENCE_MODES = ("stock",)
# Tests without parameters that run only the reference implementation.
REFERENCE_TESTS = ("tests_py/test_executor_conformance.py::test_harness_passes_with_the_stdlib_executor",)

# Node id prefixes that cannot hold under ASAN, and why.
UNSUITED = {
    "tests_py/test_memory.py": "bounds RSS growth, which ASAN's quarantine and shadow memory inflate",
    "tests_py/test_executor.py::test_stress_memory_flat": "bounds RSS growth, which ASAN's quarantine inflates",
}


def _is_ours(item: pytest.Item) -> bool:
    if item.nodeid in REFERENCE_TESTS:
        return False
    params = getattr(getattr(item, "callspec", None), "params", {})
    if params.get("mode") in REFERENCE_MODES:
        return False
    return all(params.get(name, OURS) == OURS for name in IMPLEMENTATION_PARAMS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        (kept if _is_ours(item) else dropped).append(item)
        for prefix, reason in UNSUITED.items():
            if item.nodeid.startswith(prefix):
                item.add_marker(pytest.mark.skip(reason=f"under ASAN: {reason}"))
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
