"""What trace.py and measure.py start a function binary with: Lambda's environment and a
stand-in Runtime API on loopback that takes the binary's first poll."""
import os
import socket

NEXT = "GET /2018-06-01/runtime/invocation/next "


def runtime_api(seconds):
    """A listening socket on a free loopback port, for one connection."""
    api = socket.socket()
    api.bind(("127.0.0.1", 0))
    api.listen(1)
    api.settimeout(seconds)
    return api


def environment(name, api):
    """Lambda's environment for a function `name` polling `api`, with what the template
    sets (a superset: each function reads its own) and Amazon's roots, as on Lambda."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:%d" % api.getsockname()[1],
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + name,
        "AWS_LAMBDA_LOG_STREAM_NAME": "startup",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "startup",
        "AWS_SECRET_ACCESS_KEY": "startup",
        "DROGUE_TABLE": "drogue",
        "DROGUE_EVENT_STREAM": "drogue-events",
        "DROGUE_TLS_ROOTS": "amazon",
    }
