"""What missed-event replay costs per event: recovery off vs on, Redis stream vs pub/sub.

Usage: python bench/recovery_cost.py [--rounds N] [--sockets N]
Uses bench/run.py's servers, subscribers and checks (needs what it needs, plus
redis-server). Each round measures, in turn, four sidecar set-ups with the same subscribers
(latency at 100 events/s, then events/s and CPU per event under four posters):

  plain       one process, no socket opted in: today's frames
  recovering  one process, every socket opted in (`auth.recovery`): each frame carries its
              offset, and the fan-out builds that second frame variant
  pubsub      with Redis: events over python-socketio's Redis pub/sub (how they crossed
              replicas before; bench/serve_variant.py `pubsub`)
  stream      with Redis: events through the Redis stream (XADD, then XREAD on every
              replica): what `nestmtx-sidecar serve` does with NESTMTX_REDIS_URL

Ratios (recovering/plain, stream/pubsub) are medians of the ratios within each round.
Prints a Markdown table; writes bench/results/recovery-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from run import BENCH, ROOT, Fleet, attempt, free_port, latency, machine, runtime_python, serve
from run import throughput as measure_throughput

# name -> (server name for run.serve, every socket opts in, needs Redis)
SETUPS = {"plain": ("sidecar", False, False), "recovering": ("sidecar", True, False),
          "pubsub": ("pubsub", False, True), "stream": ("sidecar", False, True)}
RATIOS = (("recovering", "plain"), ("stream", "pubsub"))


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway Redis on a loopback port, no persistence."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def measure(setup: str, workdir: Path, sockets: int) -> dict[str, Any]:
    name, recovery, with_redis = SETUPS[setup]
    with contextlib.ExitStack() as stack:
        settings = ({"NESTMTX_REDIS_URL": stack.enter_context(redis_server())}
                    if with_redis else {})
        async with serve(name, workdir, settings) as server:
            fleet = Fleet(server, recovery=recovery)
            try:
                await fleet.grow_to(sockets)
                return {"latency": await latency(fleet, 300, 100),
                        "throughput": await measure_throughput(fleet, 2000)}
            finally:
                await fleet.stop()


def ratio(rounds: list[dict[str, Any]], setup: str, base: str, scenario: str, metric: str
          ) -> float | None:
    """Median over the rounds of setup / base, each round's pair measured minutes apart."""
    values = [r[setup][scenario][metric] / r[base][scenario][metric] for r in rounds
              if "error" not in r[setup] and "error" not in r[base]
              and r[base][scenario][metric]]
    return round(statistics.median(values), 2) if values else None


def table(rounds: list[dict[str, Any]]) -> str:
    figures = (("events/s", ("throughput", "events_per_s")),
               ("server CPU us/event", ("throughput", "server_cpu_us_per_event")),
               ("p50 ms at 100/s", ("latency", "p50_ms")),
               ("p99 ms at 100/s", ("latency", "p99_ms")))
    lines = ["| figure | " + " | ".join(SETUPS) + " | recovering/plain | stream/pubsub |",
             "|---" * (len(SETUPS) + 3) + "|"]
    for label, (scenario, metric) in figures:
        cells = []
        for setup in SETUPS:
            values = [r[setup][scenario][metric] for r in rounds if "error" not in r[setup]]
            cells.append(str(statistics.median(values)) if values else "error")
        ratios = [ratio(rounds, setup, base, scenario, metric) for setup, base in RATIOS]
        lines.append(f"| {label} | " + " | ".join(cells) + " | "
                     + " | ".join(f"x{r}" if r is not None else "-" for r in ratios) + " |")
    lost = sum(r[s][k]["lost_frames"] + r[s][k]["order_errors"] for r in rounds for s in SETUPS
               if "error" not in r[s] for k in ("latency", "throughput"))
    lines.append(f"\nFrames lost or out of order, all set-ups and rounds: {lost}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat(),
                               "machine": machine(), "sockets": args.sockets, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="nestmtx-bench-") as tmp:
        for number in range(1, args.rounds + 1):
            measured: dict[str, Any] = {}
            for setup in SETUPS:
                await attempt(measured, setup, f"{setup} (round {number}/{args.rounds})",
                              measure(setup, Path(tmp), args.sockets))
            results["rounds"].append(measured)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sockets", type=int, default=100)
    args = parser.parse_args()
    subprocess.run(["npm", "ci", "--prefix", str(BENCH), "--no-audit", "--no-fund", "--silent"],
                   check=True)
    runtime_python()  # built before the run, not inside a measurement
    results = asyncio.run(run(args))
    print(table(results["rounds"]))
    out = BENCH / "results" / f"recovery-{results['started'][:19].replace(':', '')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
