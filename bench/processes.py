"""Starting and stopping the server processes, and running the load generator."""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bench.environment import ClientFiles

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 30


class ServerProcess:
    """`python -m <module> <config>`: waits for its {"port": ...} line; stderr goes to `log`."""

    def __init__(self, module: str, config: Path, log: Path, *extra: str) -> None:
        self._log = log.open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", module, str(config), *extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], STARTUP_SECONDS)
        line = self._proc.stdout.readline() if ready else b""
        if not line:
            # Exited, or stuck (e.g. a startup error that left a thread running): never hang.
            self._proc.kill()
            self._proc.wait()
            self._log.close()
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"{module} did not start serving ({' '.join(tail)}); see {log}")
        self.port: int = json.loads(line)["port"]
        self.pid = self._proc.pid
        self.final: dict[str, Any] = {}

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server has used so far (Linux /proc)."""
        return _cpu_seconds(Path(f"/proc/{self.pid}/stat"))

    def main_thread_cpu_seconds(self) -> float:
        """The same for the main thread alone: the one running the event loop."""
        return _cpu_seconds(Path(f"/proc/{self.pid}/task/{self.pid}/stat"))

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
        out, _ = self._proc.communicate(timeout=60)
        self._log.close()
        lines = [line for line in out.decode().splitlines() if line.strip()]
        if lines:
            self.final = json.loads(lines[-1])

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def load(
    *,
    server: ServerProcess,
    client: ClientFiles,
    method: str,
    concurrency: int,
    channels: int,
    duration: float,
    warmup: float,
    prefix: str,
) -> dict[str, Any]:
    """One load generator run against `server` in a fresh process; returns its JSON report
    with the server's and the load generator's CPU time per call added."""
    argv = [
        sys.executable,
        "-m",
        "bench.loadgen",
        f"--target=localhost:{server.port}",
        f"--ca={client.ca}",
        f"--cert={client.cert}",
        f"--key={client.key}",
        f"--method={method}",
        f"--concurrency={concurrency}",
        f"--channels={channels}",
        f"--duration={duration}",
        f"--warmup={warmup}",
        f"--prefix={prefix}",
    ]
    server_cpu, loop_cpu = server.cpu_seconds(), server.main_thread_cpu_seconds()
    client_cpu = _children_cpu()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    # CPU per call is steadier than calls per second when neighbours share the machine.
    calls = max(result["all_calls"], 1)
    result["server_cpu_us"] = (server.cpu_seconds() - server_cpu) / calls * 1e6
    # The event loop's share: all Python work shares one GIL, and this thread holds most of it.
    result["loop_cpu_us"] = (server.main_thread_cpu_seconds() - loop_cpu) / calls * 1e6
    result["client_cpu_us"] = (_children_cpu() - client_cpu) / calls * 1e6
    return result


def _cpu_seconds(stat: Path) -> float:
    """utime + stime of a /proc stat file, in seconds."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU time of the finished children of this process (the load generators)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
