"""Wall clock and CPU time of a whole process tree (a `refinery run` and its workers, a datatrove run), for the
benchmarks that run contenders as subprocesses (bench_extract.py)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple


class Timed(NamedTuple):
    seconds: float  # wall clock of the whole process: interpreter start-up and worker start included
    cpu_seconds: float  # user + system time of the process and all its descendants
    stdout: str


class TreeCpu(threading.Thread):
    """CPU time of a process tree, sampled from /proc every 0.25 s. getrusage cannot see it: the engine's
    workers are children of a fork server that nobody waits for. Other users' load inflates wall clocks
    on a shared machine far more than CPU time, so pages per CPU second is the steadier comparison."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root, self.ticks, self.halt = pid, {}, threading.Event()

    def sample(self) -> None:
        ticks, children = {}, defaultdict(list)
        for entry in os.listdir("/proc"):
            try:
                # after the ")" that ends the command name: state, ppid, ... utime (12th), stime (13th)
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                ticks[int(entry)] = int(fields[11]) + int(fields[12])
                children[int(fields[1])].append(int(entry))
            except (ValueError, OSError, IndexError):
                continue
        frontier = [self.root]
        while frontier:
            pid = frontier.pop()
            if pid in ticks:
                self.ticks[pid] = max(self.ticks.get(pid, 0), ticks[pid])
            frontier += children.get(pid, [])

    def run(self) -> None:
        while not self.halt.wait(0.25):
            self.sample()

    @property
    def seconds(self) -> float:
        return sum(self.ticks.values()) / os.sysconf("SC_CLK_TCK")


def run_timed(command: list[str]) -> Timed:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu = TreeCpu(process.pid)
    cpu.start()
    stdout, stderr = process.communicate()
    elapsed = time.perf_counter() - started
    cpu.halt.set()
    cpu.join()
    if process.returncode:
        raise SystemExit(f"{command[:3]} failed ({process.returncode}):\n{stderr[-3000:]}")
    return Timed(elapsed, cpu.seconds, stdout)
