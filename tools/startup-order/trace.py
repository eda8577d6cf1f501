#!/usr/bin/env python3
"""Starts a Lambda function binary under valgrind (lackey, tracing the code it runs) in
Lambda's environment with a stand-in Runtime API on loopback, and stops it when it asks
for its first event: the trace is what the binary runs from its start to its first poll.

    trace.py <binary> <trace file> [seconds]      (default: 120 seconds to poll)
"""
import os
import signal
import subprocess
import sys

from standin import NEXT, environment, runtime_api


def main() -> int:
    binary, trace = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 120.0
    api = runtime_api(seconds)
    env = environment(os.path.basename(binary), api)
    # an endpoint as the cold-start benchmark gives (moto): the few functions reading it
    # takes are placed too
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    process = subprocess.Popen(
        ["valgrind", "--tool=lackey", "--trace-superblocks=yes", "--log-file=" + trace, binary],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        connection, _ = api.accept()
        connection.settimeout(seconds)
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = connection.recv(4096)
            if not chunk:
                break
            request += chunk
        polled = request.decode("latin-1").startswith(NEXT)
    except TimeoutError:
        polled = False
    # valgrind writes out its trace as the binary ends on the signal
    process.send_signal(signal.SIGTERM)
    process.wait()
    if not polled:
        print("%s: did not ask for its first event" % binary, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
