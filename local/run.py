"""`make run`: the gateway on a laptop with no Azure at all.

Starts the project's Azure OpenAI simulator as three backends (a primary
pair, one of them flaky enough to show failover, and a lower-priority spare),
points the gateway at them, creates a demo subscription, and serves the
gateway on http://127.0.0.1:7071 (PORT overrides). If GATEWAY_BACKENDS is set
(in the environment or local.settings.json) those backends are used and no
simulator starts. GATEWAY_DEMO_KEY chooses the demo subscription key.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from urllib.parse import quote

from devtools.ports import NotListening, free_port, wait_for_port, wait_for_url
from local.host import ROOT, load_local_settings

SIM_KEY_SETTING = "LOCAL_SIMULATOR_KEY"


def _wait_for(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float = 20.0) -> None:
    try:
        wait_for_port(port, timeout=timeout, exit_code=proc.poll, name=name)
    except NotListening as exc:
        raise SystemExit(str(exc)) from None


def start_simulators(sim_key: str) -> tuple[list[subprocess.Popen[bytes]], list[dict[str, object]]]:
    plan = [
        ("sim-eastus", "eastus", 1, []),
        ("sim-westus", "westus", 1, ["--error-rate", "0.3", "--error-status", "503"]),
        ("sim-swedencentral", "swedencentral", 2, []),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    backends: list[dict[str, object]] = []
    for name, region, priority, extra in plan:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--name",
            name,
            "--region",
            region,
            "--deployments",
            "gpt-4o-mini,text-embedding-3-small",
            "--api-key",
            sim_key,
            "--ttft-ms",
            "150",
            "--tps",
            "80",
            "--embedder",
            "local",
            *extra,
        ]
        # One BLAS thread: the local embedder is faster on small matrices without a thread pool.
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, env=env)
        procs.append(proc)
        _wait_for(port, proc, name)
        backends.append(
            {
                "name": name,
                "endpoint": f"http://127.0.0.1:{port}",
                "priority": priority,
                "weight": 1,
                "region": region,
                "deployments": {"gpt-4o-mini": "gpt-4o-mini", "text-embedding-3-small": "text-embedding-3-small"},
                "auth": {"type": "api_key", "setting": SIM_KEY_SETTING},
            }
        )
    return procs, backends


def banner(url: str, key: str, admin_key: str, simulated: bool) -> str:
    curl = (
        f"curl -s {url}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21 \\\n"
        f'  -H "api-key: {key}" -H "content-type: application/json" \\\n'
        '  -d \'{"messages": [{"role": "user", "content": "Hello!"}]}\''
    )
    python = (
        "from openai import AzureOpenAI\n"
        f'client = AzureOpenAI(azure_endpoint="{url}", api_key="{key}", api_version="2024-10-21")\n'
        'reply = client.chat.completions.create(model="gpt-4o-mini", '
        'messages=[{"role": "user", "content": "Hello!"}])\n'
        "print(reply.choices[0].message.content)"
    )
    backends = (
        "three simulated Azure OpenAI backends (one answers 30% 503s to show failover)"
        if simulated
        else "the backends in GATEWAY_BACKENDS"
    )
    return (
        f"\nGateway: {url}  ({backends})\n"
        f"Subscription key: {key}\n"
        f"Admin key (x-admin-key, {url}/gateway/admin/...): {admin_key}\n\n"
        # In the fragment: the browser keeps it to itself (never sent, never logged); the page stores it and
        # removes it from the address bar.
        f"Chat in the browser: {url}/chat/#key={quote(key, safe='')}\n"
        f"Operations dashboard: {url}/dashboard/#key={quote(admin_key, safe='')}\n\n"
        f"Try it with curl:\n{curl}\n\nOr with Python (pip install openai):\n{python}\n"
    )


def main() -> None:
    os.chdir(ROOT)
    load_local_settings()
    env = os.environ.copy()
    procs: list[subprocess.Popen[bytes]] = []
    simulated = not env.get("GATEWAY_BACKENDS")
    if simulated:
        env[SIM_KEY_SETTING] = env.get(SIM_KEY_SETTING) or secrets.token_urlsafe(16)
        procs, backends = start_simulators(env[SIM_KEY_SETTING])
        env["GATEWAY_BACKENDS"] = json.dumps(backends)
        env.setdefault(
            "GATEWAY_CACHE",
            json.dumps({"deployments": ["gpt-4o-mini"], "embedder": "local", "ttl_seconds": 3600, "semantic": True}),
        )
        env.setdefault("GATEWAY_PROBE_SCHEDULE", "*/15 * * * * *")
    env.setdefault("GATEWAY_METRICS_ENDPOINT", "true")  # Prometheus text at /metrics (admin key)
    env["GATEWAY_DEMO_KEY"] = env.get("GATEWAY_DEMO_KEY") or "gw-demo-" + secrets.token_urlsafe(24)
    env["GATEWAY_ADMIN_KEY"] = env.get("GATEWAY_ADMIN_KEY") or "admin-" + secrets.token_urlsafe(16)
    port = int(env.get("PORT") or 7071)
    url = f"http://127.0.0.1:{port}"
    gateway = subprocess.Popen([sys.executable, "-m", "local.host", "--port", str(port)], cwd=ROOT, env=env)
    procs.append(gateway)
    try:
        try:  # the banner only once the gateway answers HTTP, not merely listens
            wait_for_url(f"{url}/health", timeout=60, exit_code=gateway.poll, name="gateway")
        except NotListening as exc:
            raise SystemExit(str(exc)) from None
        print(banner(url, env["GATEWAY_DEMO_KEY"], env["GATEWAY_ADMIN_KEY"], simulated), flush=True)
        gateway.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    if gateway.returncode not in (0, None, -signal.SIGINT):
        raise SystemExit(gateway.returncode)


if __name__ == "__main__":
    main()
