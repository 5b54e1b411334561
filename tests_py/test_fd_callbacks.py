"""add_reader/add_writer and their removal: the native descriptor watchers under asyncio's
sockets, transports and pipes. Each test runs on every loop and must behave as stock asyncio."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import inspect
import os
import socket
import tempfile
import warnings
import weakref
from asyncio import selector_events

import pytest


def run_until(loop: asyncio.AbstractEventLoop, predicate, timeout: float = 5.0) -> None:
    async def wait() -> None:
        while not predicate():
            await asyncio.sleep(0.001)

    loop.run_until_complete(asyncio.wait_for(wait(), timeout))


@pytest.mark.uvloop_xfail("uvloop's remove_reader/remove_writer return None")
def test_reader_runs_while_data_is_waiting_and_stops_once_removed(loop):
    r, w = socket.socketpair()
    with r, w:
        r.setblocking(False)
        calls = []
        loop.add_reader(r.fileno(), calls.append, "ready")
        loop.run_until_complete(asyncio.sleep(0.01))
        assert calls == []
        w.send(b"x")
        run_until(loop, lambda: calls)
        # Level-triggered: called again while the byte is unread.
        run_until(loop, lambda: len(calls) >= 3)
        assert loop.remove_reader(r.fileno()) is True
        assert loop.remove_reader(r.fileno()) is False
        count = len(calls)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert len(calls) == count


@pytest.mark.uvloop_xfail("uvloop's remove_reader/remove_writer return None")
def test_writer_on_a_socket_object_and_reader_beside_it(loop):
    r, w = socket.socketpair()
    with r, w:
        events = []
        loop.add_writer(w, events.append, "w")
        loop.add_reader(w, events.append, "r")
        run_until(loop, lambda: "w" in events)
        assert "r" not in events
        r.send(b"x")
        run_until(loop, lambda: "r" in events)
        assert loop.remove_writer(w) is True
        assert loop.remove_reader(w) is True
        assert loop.remove_writer(w) is False


def test_adding_a_reader_again_replaces_and_cancels_the_first(loop):
    r, w = socket.socketpair()
    with r, w:
        calls = []
        loop.add_reader(r, calls.append, "first")
        loop.add_reader(r, calls.append, "second")
        w.send(b"x")
        run_until(loop, lambda: calls)
        loop.remove_reader(r)
        assert set(calls) == {"second"}


def test_reader_removing_itself_from_its_callback(loop):
    r, w = socket.socketpair()
    with r, w:
        calls = []

        def once() -> None:
            calls.append(1)
            loop.remove_reader(r)

        loop.add_reader(r, once)
        w.send(b"x")
        run_until(loop, lambda: calls)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert calls == [1]


@pytest.mark.uvloop_xfail("uvloop's remove_reader/remove_writer return None")
def test_a_closed_socket_is_removed_by_identity(loop):
    r, w = socket.socketpair()
    with w:
        loop.add_reader(r, lambda: None)
        r.close()
        assert loop.remove_reader(r) is True
        # Never registered and closed: the selector's ValueError.
        other, peer = socket.socketpair()
        other.close()
        peer.close()
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            loop.remove_reader(other)


def test_a_descriptor_closed_while_watched_does_not_break_the_loop(loop, loop_name, request):
    if loop_name == "asyncio":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="stock asyncio's selector keeps the stale registration of the closed "
                "descriptor and never reports the socket that reuses its number",
            )
        )
    first, peer = socket.socketpair()
    loop.add_reader(first, lambda: None)
    peer.close()
    first.close()  # still registered: the loop must survive its number being reused
    r, w = socket.socketpair()
    with r, w:
        calls = []
        loop.add_reader(r, calls.append, 1)
        w.send(b"x")
        run_until(loop, lambda: calls)
        loop.remove_reader(r)


@pytest.mark.uvloop_xfail("uvloop does not refuse regular files")
def test_regular_file_is_refused_as_epoll_refuses_it(loop):
    with tempfile.TemporaryFile() as file:
        with pytest.raises(PermissionError):
            loop.add_reader(file, lambda: None)
        assert loop.remove_reader(file) is False


@pytest.mark.parametrize("fileobj, error", [("nope", ValueError), (-1, ValueError), (object(), ValueError)])
def test_bad_file_objects(loop, fileobj, error):
    with pytest.raises(error):
        loop.add_reader(fileobj, lambda: None)
    with pytest.raises(error):
        loop.add_writer(fileobj, lambda: None)


@pytest.mark.uvloop_xfail("uvloop raises for a closed descriptor number")
def test_a_number_that_is_not_open_is_refused(loop):
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError):
        loop.add_reader(fd, lambda: None)


@pytest.mark.uvloop_xfail("uvloop's remove_reader/remove_writer return None")
def test_closed_loop(loop):
    r, w = socket.socketpair()
    with r, w:
        loop.add_reader(r, lambda: None)
        loop.close()
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.add_reader(r, lambda: None)
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.add_writer(w, lambda: None)
        assert loop.remove_reader(r) is False
        assert loop.remove_writer(w) is False


def test_callbacks_and_their_arguments_are_released(loop):
    class Token:
        pass

    r, w = socket.socketpair()
    with r, w:
        token = Token()
        ref = weakref.ref(token)
        loop.add_reader(r, lambda t: None, token)
        del token
        gc.collect()
        assert ref() is not None
        loop.remove_reader(r)
        gc.collect()
        assert ref() is None


def test_a_closed_loop_with_readers_is_collected(raw_loop_factory):
    r, w = socket.socketpair()
    with r, w:
        loop = raw_loop_factory()
        # The reader's handle refers to the loop: a cycle the garbage collector must break.
        loop.add_reader(r, lambda: None)
        loop.close()
        ref = weakref.ref(loop)
        del loop
        gc.collect()
        assert ref() is None


@pytest.mark.uvloop_xfail("uvloop leaves an internal socket of the collected loop unclosed")
def test_an_open_loop_with_readers_is_collected(raw_loop_factory):
    r, w = socket.socketpair()
    with r, w:
        loop = raw_loop_factory()
        loop.add_reader(r, lambda: None)
        ref = weakref.ref(loop)
        del loop
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # "unclosed event loop"
            gc.collect()
        assert ref() is None


def test_private_add_reader_and_add_writer_run_their_callback_in_the_context_given(loop, loop_name, socket_pair):
    """asyncio's transports hand _add_reader/_add_writer their context (3.15+): the callback runs
    in it; no other keyword is taken."""
    takes_context = "context" in inspect.signature(selector_events.BaseSelectorEventLoop._add_reader).parameters
    if loop_name != "turboloop" and not takes_context:
        pytest.skip("this asyncio's _add_reader/_add_writer take no context")
    if loop_name == "uvloop":
        pytest.skip("uvloop's _add_reader/_add_writer take no context")
    var = contextvars.ContextVar("var", default="unset")
    context = contextvars.copy_context()
    context.run(var.set, "given")
    a, b = socket_pair
    seen = []

    def record(kind, remove):
        seen.append((kind, var.get()))
        remove(a)

    b.send(b"x")
    loop._add_reader(a, record, "reader", loop._remove_reader, context=context)
    loop._add_writer(a, record, "writer", loop._remove_writer, context=context)
    run_until(loop, lambda: len(seen) == 2)
    assert sorted(seen) == [("reader", "given"), ("writer", "given")]
    with pytest.raises(TypeError, match="unexpected keyword argument 'ctx'"):
        loop._add_reader(a, record, ctx=context)
