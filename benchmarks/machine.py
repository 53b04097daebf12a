"""What every benchmark reports about the machine it ran on, and its own peak memory."""

from __future__ import annotations

import os
import subprocess
import time

import torch


def describe() -> str:
    """Cores, memory, torch and its thread count: what the numbers depend on."""
    with open("/proc/meminfo") as meminfo:
        total_gib = int(meminfo.readline().split()[1]) / 2**20
    return (f"{os.cpu_count()} cpus, {total_gib:.0f} GiB memory, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def own_peak_mib() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``, which carries a parent's
    peak over fork and exec."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def wall(command: list[str]) -> float:
    """Seconds a fresh process of ``command`` takes, output discarded."""
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started
