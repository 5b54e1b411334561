"""A turboloop loop tunes glibc's malloc for message-sized blocks, unless the process chose.

Each case runs a fresh interpreter (malloc's thresholds are per process, and glibc's adapt to the
first large block freed), makes an event loop, and then asks glibc, through ctypes, whether a
16 MiB block came from the heap or was mapped on its own, and whether freeing it gave the top of
the heap back to the kernel. Untuned, glibc maps it and gives it back.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only")

PROBE = textwrap.dedent(
    """\
    import ctypes, json, sys

    libc = ctypes.CDLL(None)
    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk.argtypes = [ctypes.c_ssize_t]

    if sys.argv[1] == "turboloop":
        import turboloop
        turboloop.new_event_loop().close()
    else:
        import asyncio
        asyncio.new_event_loop().close()

    mapped_before = libc.mallinfo2().hblks
    block = libc.malloc(16 << 20)
    mapped = libc.mallinfo2().hblks > mapped_before
    break_with_block = libc.sbrk(0)
    libc.free(block)
    top_kept = libc.sbrk(0) == break_with_block
    # A sanitizer's malloc (LD_PRELOAD) takes over: glibc's then has no arena to report.
    print(json.dumps({"glibc_malloc": libc.mallinfo2().arena > 0, "mapped": mapped, "top_kept": top_kept}))
    """
)


def probe(loop: str, **environment: str) -> dict[str, bool]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("MALLOC_") and name not in ("GLIBC_TUNABLES", "TURBOLOOP_MALLOC_TUNING")}
    env.update(environment)
    result = subprocess.run([sys.executable, "-c", PROBE, loop], env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    found = json.loads(result.stdout)
    if not found.pop("glibc_malloc"):
        pytest.skip("another malloc than glibc's serves this process")
    return found


def test_a_turboloop_loop_keeps_large_blocks_on_the_heap() -> None:
    assert probe("turboloop") == {"mapped": False, "top_kept": True}


def test_stock_asyncio_leaves_glibc_as_it_is() -> None:
    # What the tuning changes: glibc maps the block and unmaps it when freed.
    assert probe("asyncio")["mapped"] is True


def test_turboloop_malloc_tuning_0_opts_out() -> None:
    assert probe("turboloop", TURBOLOOP_MALLOC_TUNING="0")["mapped"] is True


@pytest.mark.parametrize("setting", [
    {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"},
    {"MALLOC_TRIM_THRESHOLD_": "131072"},
])
def test_a_process_that_sets_malloc_itself_keeps_its_settings(setting: dict[str, str]) -> None:
    # Setting the trim threshold fixes glibc's mmap threshold at 128 KiB: the block is mapped.
    assert probe("turboloop", **setting)["mapped"] is True
