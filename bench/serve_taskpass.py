"""The real taskpass server, in its own process: `python -m bench.serve_taskpass CONFIG`.

Prints one JSON line when serving ({"port", "pid"}), and on SIGTERM another with the store
writer's batching statistics. `--cprofile OUT` profiles the whole serving time; `--cut PART`
serves with one part cut out (bench/cuts.py), for the "where the ratio goes" figure only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import signal
import sys
from pathlib import Path

from bench import cuts
from taskpass.server.app import TaskpassServer, tune_garbage_collection
from taskpass.server.config import load_config
from taskpass.server.store.sqlite import SqliteStore


async def _serve(config_file: Path) -> None:
    server = await TaskpassServer.start(load_config(config_file))
    tune_garbage_collection()  # as `taskpass serve` does (app.serve_forever)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    print(json.dumps({"port": server.ports.mtls}), flush=True)
    await stopping.wait()
    await server.stop()
    store = server.store
    if isinstance(store, SqliteStore):
        stats = store.writer_stats
        print(
            json.dumps(
                {
                    "batches": stats.batches,
                    "operations": stats.operations,
                    "largest_batch": stats.largest_batch,
                }
            ),
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_taskpass")
    parser.add_argument("config", type=Path)
    parser.add_argument("--cprofile", type=Path, help="write cProfile stats here on exit")
    parser.add_argument("--cut", choices=cuts.CUTS, help="serve with this part cut out")
    args = parser.parse_args(argv)
    if args.cut is not None:
        cuts.apply(args.cut)
    # The same logging set-up as `taskpass serve` (INFO to stderr): its cost is part of the path.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.cprofile is None:
        asyncio.run(_serve(args.config))
        return 0
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(_serve(args.config))
    finally:
        profiler.disable()
        profiler.dump_stats(args.cprofile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
