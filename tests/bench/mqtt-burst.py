"""A device's burst just before its connection ends: one subscriber (Eclipse Paho)
subscribes; a device connects over a raw socket (MQTT 3.1.1 or 5), writes N QoS 0
publishes and then DISCONNECT (or nothing) in one write and closes at once; the number
of the burst's messages the subscriber received (until nothing more arrives for a
second, at most --max-wait s, default 10) is printed, and how long after the close the
last one came.

  mqtt-burst.py HOST:PORT --filter F --device-topic T [--device-login ID:USER:PASS]
                [--subscriber-login CLIENTID:USER:PASS] --count N --rounds R [--max-wait S]
"""
import argparse
import json
import socket
import struct
import time

import paho.mqtt.client as mqtt


def string(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def packet(first, body):
    length, rem = len(body), b""
    while True:
        digit, length = length % 128, length // 128
        rem += bytes([digit | (0x80 if length else 0)])
        if not length:
            return bytes([first]) + rem + body


def read_packet(s):
    """One whole packet from the socket."""
    data = b""

    def byte():
        nonlocal data
        b = s.recv(1)
        if not b:
            raise ConnectionError(f"the connection closed after {data!r}")
        data += b
        return b[0]

    byte()
    length, shift = 0, 0
    while True:
        digit = byte()
        length += (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            break
    while length:
        chunk = s.recv(length)
        if not chunk:
            raise ConnectionError(f"the connection closed after {data!r}")
        data += chunk
        length -= len(chunk)
    return data


def main():
    p = argparse.ArgumentParser()
    p.add_argument("broker")
    p.add_argument("--filter", required=True)
    p.add_argument("--device-topic", required=True)
    p.add_argument("--device-login")
    p.add_argument("--subscriber-login")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--max-wait", type=int, default=10)
    a = p.parse_args()
    host, port = a.broker.rsplit(":", 1)
    port = int(port)

    got = {}
    last_at = {}

    def on_message(client, userdata, m):
        try:
            body = json.loads(m.payload)
            body = body.get("data", body)
            got.setdefault(body["burst"], set()).add(body["n"])
            last_at[body["burst"]] = time.monotonic()
        except (ValueError, KeyError, TypeError, AttributeError):
            pass

    sub_id, login = "burst-subscriber", None
    if a.subscriber_login:
        sub_id, *login = a.subscriber_login.split(":", 2)
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=sub_id)
    if login:
        sub.username_pw_set(*login)
    sub.on_message = on_message
    sub.connect(host, port)
    sub.subscribe(a.filter, qos=1)
    sub.loop_start()
    time.sleep(0.5)

    burst = 0
    for version in (4, 5):
        for disconnect in (True, False):
            received, took = [], []
            for _ in range(a.rounds):
                burst += 1
                connect = string("MQTT") + bytes([version])
                if a.device_login:
                    client_id, user, password = a.device_login.split(":", 2)
                    connect += bytes([0xC2]) + struct.pack("!H", 60)
                else:
                    client_id, user, password = f"burst-device-{burst}", None, None
                    connect += bytes([0x02]) + struct.pack("!H", 60)
                if version == 5:
                    connect += b"\0"
                connect += string(client_id)
                if user is not None:
                    connect += string(user) + string(password)
                s = socket.create_connection((host, port))
                s.sendall(packet(0x10, connect))
                # the whole CONNACK (an MQTT 5 one carries properties): closing with
                # unread bytes would reset the connection, and a reset discards what
                # the broker has not read yet, on any broker
                connack = read_packet(s)
                assert connack[:1] == b"\x20", connack
                data = b"".join(
                    packet(
                        0x30,
                        string(a.device_topic)
                        + (b"\0" if version == 5 else b"")
                        + json.dumps({"burst": burst, "n": n}).encode(),
                    )
                    for n in range(a.count)
                )
                if disconnect:
                    data += b"\xe0\0"
                s.sendall(data)
                s.close()
                closed = time.monotonic()
                # until nothing more arrives for a second (at most --max-wait s)
                last, waited = -1, 0
                while waited < a.max_wait and len(got.get(burst, ())) != last:
                    last = len(got.get(burst, ()))
                    time.sleep(1)
                    waited += 1
                received.append(len(got.get(burst, ())))
                took.append(last_at.get(burst, closed) - closed)
            end = "DISCONNECT and close" if disconnect else "close"
            mqtt_version = "3.1.1" if version == 4 else "5"
            print(
                f"  MQTT {mqtt_version}, {a.count} QoS 0 publishes then {end}: received "
                + ", ".join(str(r) for r in received)
                + f" (lossless rounds: {sum(r == a.count for r in received)} of {a.rounds};"
                + f" last one {max(took):.1f} s after the close at most)",
                flush=True,
            )
    sub.loop_stop()


main()
