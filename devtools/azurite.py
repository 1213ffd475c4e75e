"""Azurite's table service on 127.0.0.1, for tests and benchmarks: start, stop and restart one process.

Started from `node_modules/.bin/azurite-table` (pinned in package.json,
installed by `npm ci`, which `make deps` runs). The pytest fixtures in
tests/fixtures/azurite.py wrap this class; bench/limits_bench.py uses it as is.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from devtools.ports import NotListening, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
AZURITE_TABLE = ROOT / "node_modules" / ".bin" / "azurite-table"
# Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    """Azurite is not installed, exited, or did not listen in time."""


class Azurite:
    """One Azurite table service process; `stop()` then `start()` keeps its data (it saves on SIGINT)."""

    def __init__(self, location: Path, port: int | None = None) -> None:
        self.location = location
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> Azurite:
        if not AZURITE_TABLE.exists():
            raise AzuriteError(
                f"Azurite is not installed ({AZURITE_TABLE.relative_to(ROOT)} is missing): "
                "run `npm ci` (or `make deps`, which does it)."
            )
        self.location.mkdir(parents=True, exist_ok=True)
        log = self.location / "azurite.log"  # a file, not a pipe: a long run must never block on a full pipe
        with log.open("ab") as sink:
            self._process = subprocess.Popen(  # noqa: S603 (our own pinned binary, fixed arguments)
                [
                    str(AZURITE_TABLE),
                    "--tableHost",
                    "127.0.0.1",
                    "--tablePort",
                    str(self.port),
                    "--location",
                    str(self.location),
                    "--skipApiVersionCheck",
                    "--disableTelemetry",
                ],
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        try:
            wait_for_port(self.port, timeout=timeout, exit_code=self._process.poll, name="Azurite")
        except NotListening as exc:
            code = self._process.poll()
            self.stop()
            if code is not None:
                err = log.read_text(errors="replace").strip()
                raise AzuriteError(f"Azurite exited with code {code}: {err}") from None
            raise AzuriteError(f"Azurite did not listen on port {self.port} within {timeout:.0f} s") from exc
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)  # Azurite saves its database and exits on SIGINT
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
