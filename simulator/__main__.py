"""`python -m simulator`: one simulated Azure OpenAI resource on 127.0.0.1, configured from the command line.

Prints `simulator <name> listening on http://<host>:<port>` once it accepts
connections (with `--port 0`, the port the system chose), and stops cleanly on
SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable, Sequence

from simulator.app import create_app
from simulator.config import Latency, Limits, SimulatorConfig
from simulator.faults import FaultError, Faults
from simulator.server import serve
from simulator.text import Embedder


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001, help="0 lets the system choose (the line printed says which)")
    p.add_argument("--name", default="sim")
    p.add_argument("--region", default="eastus", help="sent back in x-ms-region")
    p.add_argument("--deployments", default="gpt-4o-mini,text-embedding-3-small", help="comma-separated names")
    p.add_argument("--api-key", help="require this key in api-key or Authorization: Bearer (default: accept any)")
    p.add_argument("--tpm", type=int, help="tokens per minute per deployment (default: unlimited)")
    p.add_argument("--rpm", type=int, help="requests per minute per deployment (default: unlimited)")
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=TPM[:RPM]",
        help="limits of one deployment, overriding --tpm/--rpm (repeatable; 0 means unlimited)",
    )
    p.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token")
    p.add_argument("--tps", type=float, default=0.0, help="completion tokens per second (0: instant)")
    p.add_argument("--default-max-tokens", type=int, default=16, help="completion length when none is asked for")
    p.add_argument("--dimensions", type=int, default=384, help="vector length of the hash embedder")
    p.add_argument("--embedder", choices=("hash", "local"), default="hash", help="local: all-MiniLM-L6-v2")
    p.add_argument("--request-log-size", type=int, default=200)
    p.add_argument("--hang-limit", type=float, default=300.0, help="seconds after which a hung request is let go")
    p.add_argument(
        "--stream-filter-results",
        action="store_true",
        help="open chat streams with Azure's prompt_filter_results chunk and annotate each chunk",
    )
    p.add_argument("--background-seconds", type=float, default=0.4, help="how long a background response runs")
    p.add_argument(
        "--batch-step-seconds", type=float, default=0.2, help="each of a batch's four stages lasts this long"
    )
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest multipart upload (files, audio, images)")
    p.add_argument("--log-level", default="WARNING")
    faults = p.add_argument_group("faults at start (change them later over /_sim/faults)")
    faults.add_argument("--error-rate", type=float, default=0.0)
    faults.add_argument("--error-status", type=int, default=500)
    faults.add_argument("--throttle-rate", type=float, default=0.0)
    faults.add_argument("--retry-after", type=float, default=10.0, help="seconds, for throttle faults")
    faults.add_argument("--retry-after-ms", type=int)
    faults.add_argument("--slow-first-byte-ms", type=float, default=0.0)
    faults.add_argument("--hang", action="store_true")
    faults.add_argument("--drop-mid-stream-after", type=int, metavar="CHUNKS")
    faults.add_argument("--drop-after-headers", action="store_true")
    faults.add_argument("--down", action="store_true")
    faults.add_argument("--fault-count", type=int, help="clear the faults after this many faulted requests")
    faults.add_argument("--fault-deployments", help="comma-separated: only these deployments are faulted")
    faults.add_argument("--seed", type=int, help="seed for error_rate / throttle_rate dice")
    return p


def _limit(text: str) -> tuple[str, Limits]:
    name, sep, values = text.partition("=")
    tpm, _, rpm = values.partition(":")
    if not sep or not name or not tpm.isdigit() or (rpm and not rpm.isdigit()):
        raise ValueError(f"--limit {text!r} is not NAME=TPM[:RPM]")
    return name, Limits(tpm=int(tpm) or None, rpm=(int(rpm) or None) if rpm else None)


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    faults = Faults(
        error_rate=args.error_rate,
        error_status=args.error_status,
        throttle_rate=args.throttle_rate,
        retry_after=args.retry_after,
        retry_after_ms=args.retry_after_ms,
        slow_first_byte_ms=args.slow_first_byte_ms,
        hang=args.hang,
        drop_mid_stream_after=args.drop_mid_stream_after,
        drop_after_headers=args.drop_after_headers,
        down=args.down,
        count=args.fault_count,
        deployments=tuple(args.fault_deployments.split(",")) if args.fault_deployments else None,
        seed=args.seed,
    )
    return SimulatorConfig(
        name=args.name,
        host=args.host,
        port=args.port,
        region=args.region,
        deployments=tuple(d for d in args.deployments.split(",") if d),
        limits=Limits(tpm=args.tpm, rpm=args.rpm),
        deployment_limits=dict(_limit(text) for text in args.limit),
        api_key=args.api_key,
        latency=Latency(ttft_ms=args.ttft_ms, tokens_per_second=args.tps),
        faults=faults,
        default_max_tokens=args.default_max_tokens,
        embedding_dimensions=args.dimensions,
        request_log_size=args.request_log_size,
        hang_limit_seconds=args.hang_limit,
        stream_filter_results=args.stream_filter_results,
        background_seconds=args.background_seconds,
        batch_step_seconds=args.batch_step_seconds,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
    )


def load_local_embedder() -> Embedder:
    """all-MiniLM-L6-v2 from `shared.cache.minilm`, imported only when asked for (it is heavy, and optional here)."""
    try:
        from shared.cache.minilm import embed_texts  # noqa: PLC0415 - only `--embedder local` pays for the model
    except ImportError as exc:
        raise SystemExit(
            f"--embedder local needs shared.minilm.embed_texts (all-MiniLM-L6-v2), which could not be imported: {exc}"
        ) from exc
    return embed_texts


async def _serve_until_signalled(config: SimulatorConfig, embedder: Embedder | None) -> None:
    runner, port = await serve(create_app(config, embedder=embedder), config.host, config.port)
    print(f"simulator {config.name} listening on http://{config.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up for the benchmark baseline
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except (ValueError, FaultError) as exc:
        raise SystemExit(f"simulator: {exc}") from exc
    embedder = load_local_embedder() if args.embedder == "local" else None
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_until_signalled(config, embedder))


if __name__ == "__main__":
    main()
