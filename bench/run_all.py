"""`make bench`: every benchmark in bench/, one after another, with short bounded runs; then which ran OK.

Each benchmark prints its own figures as it goes (its output is passed
through untouched). The arguments below keep the whole run to about ten
minutes on two cores; run a benchmark on its own with its defaults for the
figures the README quotes (each module's `--help` says how). A benchmark that
fails, or overruns its time limit (its whole process group is then stopped),
is reported and the next one still runs; the exit code is 1 if any failed.

Run: `python -m bench.run_all [--only proxy_bench,limits_bench] [--list]`
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Bench:
    module: str
    args: tuple[str, ...]
    timeout: float  # seconds before the benchmark's process group is stopped
    what: str


BENCHES = (
    Bench("bench.proxy_bench", ("--requests", "1500"), 180, "gateway overhead against the simulator called directly"),
    Bench(
        "bench.telemetry_bench",
        ("--requests", "600", "--rounds", "2", "--export-seconds", "5"),
        240,
        "CPU per request for each telemetry setting (exports every 5 s so a short run includes them)",
    ),
    Bench(
        "bench.limits_bench",
        ("--minutes", "0.5", "--window-seconds", "10", "--cost-requests", "1500"),
        240,
        "shared token limits across three gateways on one Azurite (10 s windows)",
    ),
    Bench(
        "bench.streams_bench",
        ("--streams", "500", "1000"),
        240,
        "concurrent streams direct and through a gateway process: TTFB, CPU per event, memory per stream",
    ),
    Bench(
        "bench.fault_matrix",
        ("--requests", "200"),
        240,
        "client-visible errors per fault (down, 500s, slow, hang, cut streams, 429s, 30 % on both, poison)",
    ),
    Bench("bench.embed_bench", ("--prompts", "100"), 120, "local embedding load time and time per prompt"),
    Bench("bench.cache_bench", ("--quick",), 300, "semantic cache: store lookups, embeddings, hit against miss"),
    Bench("bench.cache_eval.evaluate", (), 180, "cache threshold evidence over labelled pairs (rewrites curve.md)"),
    Bench("bench.cache_triples", (), 180, "question, paraphrase and minimal pair end to end through the openai SDK"),
    Bench("bench.fuzz", ("--examples", "5000"), 300, "every route fuzzed over HTTP: statuses, 5xx (target 0)"),
)


@dataclass(frozen=True, slots=True)
class Outcome:
    bench: Bench
    ok: bool
    seconds: float
    detail: str


def run(bench: Bench) -> Outcome:
    command = [sys.executable, "-m", bench.module, *bench.args]
    print(f"\n=== {bench.module}: {bench.what}\n$ {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    # Its own session, so a timeout stops the gateways, simulators and Azurite it started along with it.
    proc = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        code = proc.wait(timeout=bench.timeout)
    except subprocess.TimeoutExpired:
        _stop_group(proc)
        return Outcome(bench, False, time.monotonic() - started, f"stopped after its {bench.timeout:.0f} s limit")
    except KeyboardInterrupt:
        _stop_group(proc)
        raise
    seconds = time.monotonic() - started
    return Outcome(bench, code == 0, seconds, "ok" if code == 0 else f"exit code {code}")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the benchmark's process group (its context managers clean up), SIGKILL if that is not enough."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated module names (e.g. proxy_bench,limits_bench)")
    parser.add_argument("--list", action="store_true", help="print the benchmarks and their arguments, run nothing")
    args = parser.parse_args(argv)
    chosen = list(BENCHES)
    if args.only:
        wanted = {name.strip().removeprefix("bench.") for name in args.only.split(",") if name.strip()}
        known = {b.module.removeprefix("bench.") for b in BENCHES}
        if unknown := wanted - known:
            parser.error(f"--only: unknown {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        chosen = [b for b in BENCHES if b.module.removeprefix("bench.") in wanted]
    if args.list:
        for b in chosen:
            print(f"{b.module} {' '.join(b.args)}  (limit {b.timeout:.0f} s): {b.what}")
        return 0
    outcomes = [run(b) for b in chosen]
    print("\n=== summary")
    for o in outcomes:
        print(f"{'OK  ' if o.ok else 'FAIL'} {o.bench.module:<28} {o.seconds:6.1f} s  {o.detail}")
    failed = sum(not o.ok for o in outcomes)
    total = sum(o.seconds for o in outcomes)
    print(f"{len(outcomes) - failed} of {len(outcomes)} benchmarks ran OK in {total / 60:.1f} minutes")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
