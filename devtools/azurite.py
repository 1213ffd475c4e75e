"""Azurite's table service (and, when asked, its blob service) on 127.0.0.1, for tests and benchmarks.

Started from `node_modules/.bin/azurite-table` and `azurite-blob` (pinned in
package.json, installed by `npm ci`, which `make deps` runs), one process per
service sharing one data folder. The pytest fixtures in tests/fixtures/azurite.py
wrap this class; bench/limits_bench.py uses it as is.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from devtools.ports import NotListening, free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
AZURITE_TABLE = ROOT / "node_modules" / ".bin" / "azurite-table"
AZURITE_BLOB = ROOT / "node_modules" / ".bin" / "azurite-blob"
# Azurite's well-known development account (public, documented by Microsoft; not a secret).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    """Azurite is not installed, exited, or did not listen in time."""


class Azurite:
    """Azurite's table service, and its blob service with `blob=True`; `stop()` then `start()` keeps the data."""

    def __init__(self, location: Path, port: int | None = None, *, blob: bool = False) -> None:
        self.location = location
        self.port = port or free_port()
        self.blob_port = free_port() if blob else None
        self._process: subprocess.Popen[bytes] | None = None
        self._blob_process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        blob = f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};" if self.blob_port else ""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};{blob}"
        )

    @property
    def blob_connection_string(self) -> str:
        """Only the blob endpoint: for a gateway whose other stores are embedded."""
        if self.blob_port is None:
            raise AzuriteError("this Azurite was started without its blob service (blob=True)")
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/{ACCOUNT};"
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> Azurite:
        self._process = self._launch(AZURITE_TABLE, "table", self.port, timeout)
        if self.blob_port is not None:
            try:
                self._blob_process = self._launch(AZURITE_BLOB, "blob", self.blob_port, timeout)
            except AzuriteError:
                self.stop()
                raise
        return self

    def _launch(self, binary: Path, service: str, port: int, timeout: float) -> subprocess.Popen[bytes]:
        if not binary.exists():
            raise AzuriteError(
                f"Azurite is not installed ({binary.relative_to(ROOT)} is missing): "
                "run `npm ci` (or `make deps`, which does it)."
            )
        self.location.mkdir(parents=True, exist_ok=True)
        # A file, not a pipe: a long run must never block on a full pipe.
        log = self.location / ("azurite.log" if service == "table" else f"azurite-{service}.log")
        with log.open("ab") as sink:
            process = subprocess.Popen(  # noqa: S603 (our own pinned binary, fixed arguments)
                [
                    str(binary),
                    f"--{service}Host",
                    "127.0.0.1",
                    f"--{service}Port",
                    str(port),
                    "--location",
                    str(self.location),
                    "--skipApiVersionCheck",
                    "--disableTelemetry",
                ],
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )
        try:
            wait_for_port(port, timeout=timeout, exit_code=process.poll, name="Azurite")
        except NotListening as exc:
            code = process.poll()
            _stop(process)
            if code is not None:
                err = log.read_text(errors="replace").strip()
                raise AzuriteError(f"Azurite ({service}) exited with code {code}: {err}") from None
            raise AzuriteError(f"Azurite ({service}) did not listen on port {port} within {timeout:.0f} s") from exc
        return process

    def stop(self) -> None:
        process, self._process = self._process, None
        blob, self._blob_process = self._blob_process, None
        for one in (process, blob):
            if one is not None:
                _stop(one)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # Azurite saves its database and exits on SIGINT
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
