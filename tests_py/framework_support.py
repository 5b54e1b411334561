"""Helpers shared by the framework tests (test_framework_*.py): running a coroutine on a chosen
loop with proof that it ran there, and TLS contexts from a throw-away CA made at test time."""

from __future__ import annotations

import asyncio
import ssl

import pytest

TIMEOUT = 20.0  # seconds, for any one test's coroutine: a lost wake-up fails rather than hangs



def assert_on(loop_name: str) -> None:
    """Fail unless the running loop is of the named implementation."""
    # The package the loop's class comes from (stock asyncio's is asyncio.unix_events).
    package = type(asyncio.get_running_loop()).__module__.partition(".")[0]
    assert package == loop_name, type(asyncio.get_running_loop())


def run_on(loop_factory, coro_fn, *args, timeout: float = TIMEOUT):
    """``asyncio.Runner(loop_factory=...)``, as users write it, running ``coro_fn(*args)`` after
    checking that the running loop is the factory's kind; bounded by ``timeout``."""

    async def main():
        assert_on(loop_factory.loop_name)
        return await asyncio.wait_for(coro_fn(*args), timeout)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def tls_contexts(hostname: str = "127.0.0.1", pem_path=None) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts: a server certificate for ``hostname`` signed by a new CA that
    only the client context trusts.  With ``pem_path``, the server's key and certificate chain
    are also written there (for servers configured by file name)."""
    trustme = pytest.importorskip("trustme", reason="trustme (test-time certificates) is not installed")
    ca = trustme.CA()
    cert = ca.issue_cert(hostname, "localhost")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    if pem_path is not None:
        cert.private_key_and_cert_chain_pem.write_to_path(str(pem_path))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client
