#!/usr/bin/env python3
"""Spawn to first poll of function binaries, interleaved: finer than the cold-start
harness for comparing two builds of one function.

Each start runs the binary with Lambda's environment and a Runtime API address where a
listener takes the first `GET /invocation/next` and holds it; the time is from spawn to
that request. The binaries take turns, so a busy moment of the machine falls on all of
them alike. No AWS endpoint is reached: a function builds its clients on first use.
Compare builds made by the same command and copied the same way at the same time:
byte-identical copies of one binary made at different times have differed by 0.1-0.2 ms
here (how each file sits in the page cache, probably).

    tests/bench/first-poll-time.py RUNS BINARY[:NAME=VALUE...] ...

e.g. tests/bench/first-poll-time.py 300 before/http-endpoint after/http-endpoint
"""
import os
import socket
import statistics
import subprocess
import sys
import time

listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(100)
# a binary that never polls (it failed at start) ends the run with its output
listener.settimeout(10)
port = listener.getsockname()[1]
environment = dict(
    os.environ,
    AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{port}",
    AWS_LAMBDA_FUNCTION_NAME="f",
    AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
    AWS_REGION="eu-west-1",
    AWS_ACCESS_KEY_ID="x",
    AWS_SECRET_ACCESS_KEY="y",
    DROGUE_TABLE="t",
    DROGUE_EVENT_STREAM="s",
    DROGUE_TLS_ROOTS="amazon",
    RUST_LOG="warn",
)


def once(binary, extra):
    started = time.perf_counter()
    process = subprocess.Popen(
        [binary],
        env=dict(environment, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        connection, _ = listener.accept()
    except TimeoutError:
        process.kill()
        process.wait()
        sys.exit(f"{binary} did not poll the Runtime API within 10 s (exit status {process.returncode})")
    connection.recv(1000)
    polled = time.perf_counter()
    process.kill()
    process.wait()
    connection.close()
    return polled - started


runs = int(sys.argv[1])
cases = []
for arg in sys.argv[2:]:
    binary, *settings = arg.split(":")
    cases.append((arg, binary, dict(s.split("=", 1) for s in settings)))
times = {arg: [] for arg, _, _ in cases}
for arg, binary, extra in cases:
    once(binary, extra)  # the page cache warmed, not counted
for _ in range(runs):
    for arg, binary, extra in cases:
        times[arg].append(once(binary, extra))
for arg, _, _ in cases:
    sorted_times = sorted(times[arg])
    p90 = sorted_times[round((len(sorted_times) - 1) * 0.9)]
    print(f"{arg}: p50 {statistics.median(sorted_times) * 1000:.2f} ms, p90 {p90 * 1000:.2f} ms ({runs} starts)")
