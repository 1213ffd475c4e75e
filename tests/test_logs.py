"""Log lines no caller can forge: values clipped and escaped, one record per line (JSON in Azure, text locally)."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.logs import LOG_VALUE_CHARS, SafeRecords, clip, wants_json
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
FORGED = "x\n12:00:00 WARNING gateway.auth [-] admin key accepted for attacker"


def test_clip_escapes_line_breaks_and_cuts_long_values() -> None:
    assert clip("a\nb\r\tc\u2028d\x1b") == "a\\nb\\r\\tc\\u2028d\\u001b"
    long = clip("m" * 1_000_000)
    assert len(long) < LOG_VALUE_CHARS + 40
    assert long.endswith("(1000000 chars)")
    assert clip("\ud800") == "\\ud800"  # a lone surrogate is written as an escape, never handed to an encoder


def _logger(as_json: bool) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(SafeRecords(as_json=as_json))
    handler.setFormatter(logging.Formatter("%(message)s" if as_json else "%(levelname)s [%(request_id)s] %(message)s"))
    logger = logging.getLogger(f"test.logs.{as_json}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


@pytest.mark.parametrize("as_json", [False, True])
def test_every_record_is_one_line_whatever_its_values(as_json: bool) -> None:
    logger, out = _logger(as_json)
    logger.info("deployment=%s", FORGED)
    logger.info("big=%s", "y" * 100_000)
    try:
        raise ValueError(FORGED)
    except ValueError:
        logger.exception("failed on %s", "\ud800")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(len(line) < 20_000 for line in lines)
    if as_json:
        records = [json.loads(line) for line in lines]
        assert records[0]["message"] == f"deployment={FORGED}"  # intact inside its field, yet on one line
        assert "ValueError" in records[2]["exception"]
        assert {"time", "level", "logger", "request_id"} <= set(records[0])
    else:
        assert not any(line.startswith("12:00:00") for line in lines)
        assert "\\n12:00:00 WARNING" in lines[0]


def test_json_is_the_default_in_azure_and_text_locally() -> None:
    assert wants_json(None, running_in_azure=True)
    assert not wants_json("auto", running_in_azure=False)
    assert wants_json("json", running_in_azure=False)
    assert not wants_json("text", running_in_azure=True)


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(name="a", deployments=("chat",), api_key="sim-key")) as running:
        yield running


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_the_local_host_log_cannot_be_forged_by_a_model_name(
    sim: SimulatorThread, tmp_path: Path, log_format: str
) -> None:
    port = free_port()
    key = "log-test-key-0123456789abcdef"
    env = {
        **os.environ,
        "GATEWAY_BACKENDS": json.dumps(
            [
                {
                    "name": "a",
                    "endpoint": sim.url,
                    "deployments": ["chat"],
                    "auth": {"type": "api_key", "setting": "SIM_KEY"},
                }
            ]
        ),
        "SIM_KEY": "sim-key",
        "GATEWAY_DEMO_KEY": key,
        "GATEWAY_LOG_FORMAT": log_format,
        "GATEWAY_STORAGE": "",
    }
    log_path = tmp_path / "host.log"
    with log_path.open("wb") as sink:
        host = subprocess.Popen(
            [sys.executable, "-m", "local.host", "--port", str(port)],
            cwd=tmp_path,  # no local.settings.json here: only this environment
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert host.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the host did not start"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {"api-key": key, "content-type": "application/json"}
        huge = "m" * 900_000  # under the 1 MiB body limit
        for model in (FORGED, "chat\r\nINFO forged", huge[:200], "z" * 255):
            body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
            status, answer = _post(url, body, headers)
            assert status == 404
            assert len(answer) < 1_000
        body = json.dumps({"model": huge, "messages": [{"role": "user", "content": "hi"}]}).encode()
        status, answer = _post(url, body, headers)
        assert status == 400  # longer than any deployment name: refused, and never echoed back
        assert len(answer) < 1_000
        time.sleep(0.5)
    finally:
        host.send_signal(signal.SIGINT)
        host.wait(timeout=15)
    lines = log_path.read_text(errors="replace").splitlines()
    records = [line for line in lines if "gateway.request" in line or line.startswith("{")]
    assert records, lines
    assert all(len(line) < 20_000 for line in lines)
    assert not any("INFO forged" in line.split("\\r\\n")[0] and line.startswith("INFO forged") for line in lines)
    assert not any(line.startswith(("12:00:00", "INFO forged")) for line in lines)
    if log_format == "json":
        for line in lines:
            if line.startswith("{"):
                json.loads(line)  # every record a whole object
        assert all(line.startswith("{") for line in lines if "gateway." in line), lines
