#!/usr/bin/env python3
"""Starts an arm64 Lambda package's `bootstrap` under QEMU's user-mode emulation, with the
environment Lambda gives a function and a stand-in Runtime API on loopback, and checks that
it initialises and asks for its first event (GET /2018-06-01/runtime/invocation/next):
the package `sam build` made runs, linked as it is (tests/run, after the build).

    first-poll.py <bootstrap> [seconds]      (default: 60 seconds to poll)
"""
import os
import socket
import subprocess
import sys
import tempfile

NEXT = "GET /2018-06-01/runtime/invocation/next "


def main() -> int:
    bootstrap = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    package = os.path.basename(os.path.dirname(os.path.abspath(bootstrap)))
    api = socket.socket()
    api.bind(("127.0.0.1", 0))
    api.listen(1)
    api.settimeout(seconds)
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % api.getsockname()[1],
        "AWS_LAMBDA_FUNCTION_NAME": package,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + package,
        "AWS_LAMBDA_LOG_STREAM_NAME": "first-poll",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "first-poll",
        "AWS_SECRET_ACCESS_KEY": "first-poll",
        # what the template sets, a superset: each function reads its own
        "DROGUE_TABLE": "drogue",
        "DROGUE_EVENT_STREAM": "drogue-events",
    }
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", bootstrap],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            connection, _ = api.accept()
            connection.settimeout(seconds)
            request = connection.recv(4096).decode("latin-1")
            connection.close()
            polled = request.startswith(NEXT)
            first = request.split("\r\n", 1)[0]
        except socket.timeout:
            polled, first = False, "nothing within %.0f s" % seconds
        finally:
            exited = process.poll()
            process.kill()
            process.wait()
        if polled:
            print("%s: starts and polls for its first event" % package)
            return 0
        log.seek(0)
        output = log.read().decode(errors="replace")
        print("%s: did not poll for an event (%s; exit status %s)" % (package, first, exited))
        print(output[-4000:])
        return 1


if __name__ == "__main__":
    sys.exit(main())
