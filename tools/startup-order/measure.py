#!/usr/bin/env python3
"""What a function binary's start costs up to its first poll of the Runtime API: the time
from its spawn to the poll, its page faults and its CPU time then (read from /proc as it
polls), over rounds that take the binaries given in turn (BENCHMARKS.md, "Lambda cold
starts: the functions run at start placed together").

    measure.py <rounds> <starts per round> <binary> [<binary> ...]

Each binary starts in Lambda's environment with a stand-in Runtime API on loopback that
takes the poll and is then closed; the figures are the medians over the rounds of each
round's median.
"""
import statistics
import subprocess
import sys
import time

from standin import environment, runtime_api


def start(binary):
    """(ms to the first poll, page faults, ms of CPU) of one start."""
    api = runtime_api(10)
    env = environment("measure", api)
    began = time.perf_counter()
    process = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        connection, _ = api.accept()
        connection.recv(4096)
        polled = time.perf_counter()
        with open("/proc/%d/stat" % process.pid) as stat:
            faults = int(stat.read().rsplit(")", 1)[1].split()[7])  # minflt
        with open("/proc/%d/schedstat" % process.pid) as schedstat:
            cpu = int(schedstat.read().split()[0])  # ns on a CPU
        connection.close()
    finally:
        process.kill()
        process.wait()
        api.close()
    return (polled - began) * 1000, faults, cpu / 1e6


def main():
    rounds, starts, binaries = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    if not binaries:
        sys.exit(__doc__)
    medians = {binary: [] for binary in binaries}
    for _ in range(rounds):
        for binary in binaries:
            start(binary)  # the page cache warmed, not counted
            samples = [start(binary) for _ in range(starts)]
            medians[binary].append([statistics.median(s[i] for s in samples) for i in range(3)])
    print("| binary | to the first poll (ms) | page faults | CPU (ms) |")
    print("|---|---|---|---|")
    for binary, rows in medians.items():
        figures = [[row[i] for row in rows] for i in range(3)]
        print(
            "| %s | %.2f (%.2f–%.2f) | %.0f | %.2f (%.2f–%.2f) |"
            % (
                binary,
                statistics.median(figures[0]),
                min(figures[0]),
                max(figures[0]),
                statistics.median(figures[1]),
                statistics.median(figures[2]),
                min(figures[2]),
                max(figures[2]),
            )
        )


if __name__ == "__main__":
    main()
