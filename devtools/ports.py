"""Loopback ports for tests, benchmarks and `make run`: pick a free one, hold one that refuses, wait for a listener.

Everything binds 127.0.0.1 only. A free port is found by binding port 0 and
reading what the kernel chose; the socket is closed before the caller binds
it, so another process could in principle take it first, which on a
developer machine or CI runner is rare enough to accept.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LOOPBACK = "127.0.0.1"

# How a waiter learns that the process it waits for has died: `Popen.poll`, or
# `lambda: proc.returncode` for an asyncio subprocess. None while it runs.
ExitCode = Callable[[], int | None]


class NotListening(RuntimeError):
    """Nothing answered in time, or the process that should have answered exited first."""


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@contextmanager
def refusing_port() -> Iterator[int]:
    """A port held bound but never listening while the block runs: every connection to it is refused."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        yield int(s.getsockname()[1])


def listening(port: int, host: str = LOOPBACK) -> bool:
    """True if a TCP connection to host:port succeeds now."""
    with socket.socket() as s:
        return s.connect_ex((host, port)) == 0


def _check_alive(exit_code: ExitCode | None, name: str) -> None:
    if exit_code is not None and (code := exit_code()) is not None:
        raise NotListening(f"{name} exited with code {code}")


def wait_for_port(
    port: int,
    *,
    timeout: float,
    exit_code: ExitCode | None = None,
    name: str = "server",
    host: str = LOOPBACK,
    interval: float = 0.02,
) -> None:
    """Return once host:port accepts connections; raise NotListening after `timeout` s or when the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(exit_code, name)
        if listening(port, host):
            return
        if time.monotonic() >= deadline:
            raise NotListening(f"{name} did not listen on port {port} within {timeout:g} s")
        time.sleep(interval)


def wait_for_url(
    url: str, *, timeout: float, exit_code: ExitCode | None = None, name: str = "server", interval: float = 0.05
) -> int:
    """GET `url` until it answers with any HTTP status (returned); raise NotListening as `wait_for_port` does."""
    deadline = time.monotonic() + timeout
    while True:
        _check_alive(exit_code, name)
        remaining = max(0.1, deadline - time.monotonic())
        try:
            # S310: the URL is the caller's own loopback server, never user input.
            with urllib.request.urlopen(url, timeout=min(remaining, 5.0)) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as error:  # an error status is an answer: the server is up
            return error.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not up yet
        if time.monotonic() >= deadline:
            raise NotListening(f"{name} did not answer {url} within {timeout:g} s")
        time.sleep(interval)
