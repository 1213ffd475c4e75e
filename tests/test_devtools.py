"""The tooling shared by tests, benchmarks and `make run`: loopback ports, and no import from tests/ outside it."""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from devtools.ports import NotListening, free_port, listening, refusing_port, wait_for_port, wait_for_url

ROOT = Path(__file__).resolve().parent.parent


def test_free_port_is_free_and_refusing_port_refuses() -> None:
    assert not listening(free_port())
    with refusing_port() as port:
        assert not listening(port)


def test_wait_for_port_returns_once_something_listens() -> None:
    server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    try:
        wait_for_port(server.server_address[1], timeout=5)
    finally:
        server.server_close()


def test_wait_for_port_gives_up_after_its_timeout() -> None:
    with refusing_port() as port, pytest.raises(NotListening, match=f"did not listen on port {port} within 0.2 s"):
        wait_for_port(port, timeout=0.2, name="nothing")


def test_wait_for_port_stops_waiting_when_the_process_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(timeout=30)
    with refusing_port() as port, pytest.raises(NotListening, match="sim exited with code 3"):
        wait_for_port(port, timeout=30, exit_code=proc.poll, name="sim")


def test_wait_for_url_returns_the_status_even_an_error_one() -> None:
    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert wait_for_url(f"http://127.0.0.1:{server.server_address[1]}/health", timeout=5) == 404
    finally:
        server.shutdown()
        server.server_close()
    with refusing_port() as port, pytest.raises(NotListening, match="did not answer"):
        wait_for_url(f"http://127.0.0.1:{port}/health", timeout=0.2)


def test_nothing_outside_tests_imports_from_tests() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in {"tests", ".venv", ".venv-tools", "node_modules"}:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            offenders += [f"{relative}: {name}" for name in names if name == "tests" or name.startswith("tests.")]
    assert offenders == []
