"""Shared by the benchmark scripts: flags, synchronised timing, interleaved medians, and
the machine description printed above every table.

Timing rules: every contender runs in the same process, in turns (the order alternates
from round to round), after a warm-up; CUDA work is synchronised before the clock is read,
so a time is the time of the work, not of its launch. Reported: medians.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or cuda:N (default: cpu); every table is the same on "
                             "either")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own choice)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed time (default; the only choice on CUDA); cpu: "
                             "this process's CPU time, which other processes on shared cores "
                             "do not inflate (use with --threads 1)")


def setup(args: argparse.Namespace) -> torch.device:
    """Apply --threads and --seed; return the checked --device."""
    from pyro_vae.inference import resolve_device

    device = resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be >= 1; got {args.threads}")
        torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock_function(clock: str, device: torch.device) -> Callable[[], float]:
    if clock == "cpu":
        if device.type != "cpu":
            raise SystemExit("--clock cpu measures CPU work; on CUDA use --clock wall")
        return time.process_time
    return time.perf_counter


def time_call(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    """Seconds one call of fn takes, with the device's queue drained before and after."""
    now = clock_function(clock, device)
    synchronize(device)
    start = now()
    fn()
    synchronize(device)
    return now() - start


def interleaved_times(contenders: dict[str, Callable[[], object]], *, rounds: int,
                      warmup: int, device: torch.device, clock: str = "wall",
                      block_seconds: float = 0.0) -> dict[str, list[float]]:
    """Seconds per call of each contender: ``warmup`` untimed calls each, then ``rounds``
    rounds in which every contender is timed once, the order reversed every other round.

    With ``block_seconds`` > 0 each timing is the mean over a block of calls lasting about
    that long (sized from the warm-up), so that on cores shared with other processes every
    contender loses the same share of its time to them: a single call shorter than the
    scheduler's time slice is either not preempted at all or delayed by a whole slice.
    """
    names = list(contenders)
    now = clock_function(clock, device)
    block = dict.fromkeys(names, 1)
    for name in names:
        synchronize(device)
        start = now()
        for _ in range(warmup):
            contenders[name]()
        synchronize(device)
        if block_seconds > 0 and warmup:
            per_call = max((now() - start) / warmup, 1e-6)
            block[name] = max(1, round(block_seconds / per_call))
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in (names if index % 2 == 0 else names[::-1]):
            fn, count = contenders[name], block[name]
            synchronize(device)
            start = now()
            for _ in range(count):
                fn()
            synchronize(device)
            times[name].append((now() - start) / count)
    return times


def median(values) -> float:
    return statistics.median(values)


def spread(values) -> str:
    """Median with the interquartile range, in milliseconds."""
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"{1e3 * q[1]:.2f} ms [{1e3 * q[0]:.2f}, {1e3 * q[2]:.2f}]"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_lines(device: torch.device) -> list[str]:
    """Who measured what, where and when: CPU, threads, load, GPU, versions, date."""
    import pyro_vae

    lines = [f"date      {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"cpu       {_cpu_name()}; {os.cpu_count()} logical cores; torch threads "
             f"{torch.get_num_threads()}"]
    try:
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        lines.append(f"load      {load} (1, 5, 15 min; other processes share the cores)")
    except OSError:
        pass
    if device.type == "cuda":
        lines.append(f"gpu       {torch.cuda.get_device_name(device)}; CUDA "
                     f"{torch.version.cuda}")
    lines.append(f"versions  python {platform.python_version()}, torch {torch.__version__}, "
                 f"pyro-ppl {pyro.__version__}, pyro-vae {pyro_vae.__version__}")
    lines.append(f"device    {device}")
    return lines


def print_header(title: str, device: torch.device, command: str | None = None) -> None:
    print(f"# {title}")
    for line in machine_lines(device):
        print(line)
    print(f"command   {command or ' '.join(['python', *sys.argv])}")
    print()
