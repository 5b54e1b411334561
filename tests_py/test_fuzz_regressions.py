"""The fuzz targets of ``tests_py/fuzz`` as tests: every saved input replayed, and a short
fixed-seed run of each target.

``tests_py/fuzz/regressions/<target>/`` holds the inputs that once found a bug (and any crash
input ``.ci/fuzz`` saves, once its bug is fixed): each must now pass its target's oracle.  The
fixed-seed runs feed a few hundred reproducible pseudo-random inputs to each target; the
transport target's oracle is also checked on stock asyncio, which proves the oracle itself.
"""

from __future__ import annotations

import asyncio
import faulthandler
import importlib
import pathlib
import sys

import pytest

FUZZ_DIR = pathlib.Path(__file__).parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

import fuzz_loop_api  # noqa: E402
import fuzz_transport  # noqa: E402
from fuzz_input import seeded_inputs  # noqa: E402

TARGETS = {"loop_api": fuzz_loop_api.run_one, "transport": fuzz_transport.run_one}
SEEDS = range(4)
INPUTS_PER_SEED = 60


@pytest.fixture(autouse=True)
def hang_guard():
    # A hang is a failure too: dump every thread's stack and exit rather than wait forever.
    faulthandler.dump_traceback_later(300, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def saved_inputs():
    for target in TARGETS:
        for path in sorted((FUZZ_DIR / "regressions" / target).iterdir()):
            yield pytest.param(target, path, id=f"{target}/{path.name}")


@pytest.mark.parametrize("target,path", list(saved_inputs()))
def test_saved_input(target, path):
    TARGETS[target](path.read_bytes())


def test_every_target_has_saved_inputs():
    for target in TARGETS:
        assert any((FUZZ_DIR / "regressions" / target).iterdir()), target


@pytest.mark.parametrize("seed", SEEDS)
def test_loop_api_fixed_seed(seed):
    for data in seeded_inputs(seed, INPUTS_PER_SEED):
        fuzz_loop_api.run_one(data)


@pytest.mark.parametrize("loop_name", ["asyncio", "turboloop"])
@pytest.mark.parametrize("seed", SEEDS)
def test_transport_fixed_seed(seed, loop_name):
    if loop_name == "asyncio":
        factory = asyncio.SelectorEventLoop
    else:
        # Not importorskip: a missing turboloop is an error, not a skip.
        factory = importlib.import_module("turboloop").new_event_loop
    for data in seeded_inputs(seed, INPUTS_PER_SEED, size=120):
        fuzz_transport.run_connection(factory, data)
