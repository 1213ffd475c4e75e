"""The Responses API through the gateway with the official openai JavaScript SDK (npm `openai`, pinned in package.json).

A small ESM script (tests/js/responses.mjs) creates a response plain and
streamed, then a follow-up, against a real gateway over HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shared.gateway import Gateway
from simulator import SimulatorConfig, SimulatorThread
from tests.fixtures.servers import GatewayServer, settings_for

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "js" / "responses.mjs"
KEY = "test-subscription-key-0123456789abcdef"


def _node_modules() -> Path:
    """Where the SDK is installed: the checkout's node_modules (`make deps`), or GATEWAY_TEST_NODE_MODULES."""
    return Path(os.environ.get("GATEWAY_TEST_NODE_MODULES") or ROOT / "node_modules")


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorConfig(name="a", deployments=("chat",), api_key="sim-key")) as running:
        yield running


def test_the_js_sdk_creates_responses_plain_and_streamed_through_the_gateway(
    sim: SimulatorThread, gateway_server: Callable[..., GatewayServer], tmp_path: Path
) -> None:
    node = shutil.which("node")
    assert node is not None, "node is needed (make deps installs it)"
    modules = _node_modules()
    assert (modules / "openai" / "package.json").exists(), f"the openai npm package is missing from {modules}: npm ci"
    settings = settings_for([{"name": "a", "endpoint": sim.url, "deployments": ["chat"]}], GATEWAY_DEMO_KEY=KEY)
    gw = gateway_server(lambda: Gateway(settings))
    # The script runs beside a node_modules link, so `import "openai"` resolves however the SDK was installed.
    (tmp_path / "node_modules").symlink_to(modules.resolve(), target_is_directory=True)
    script = tmp_path / SCRIPT.name
    shutil.copy(SCRIPT, script)
    done = subprocess.run([node, str(script), gw.url, KEY], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["plainText"]
    assert seen["plainUsage"]["output_tokens"] > 0
    assert seen["types"][0] == "response.created"
    assert seen["types"][-1] == "response.completed"
    assert "response.output_text.delta" in seen["types"]
    assert seen["streamedUsage"]["output_tokens"] > 0
    assert seen["followUpPrevious"]
