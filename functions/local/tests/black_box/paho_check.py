"""Eclipse Paho (Python) against drogue-local's MQTT broker; prints what it saw as JSON.

An application subscribes to app/app1 over MQTT 3.1.1, device dev1 publishes over MQTT 5
at QoS 1 with a content type, a wrong password is refused, and a subscription to
another device's commands is refused.

usage: paho_check.py <host> <port> <user> <token>
"""

import json
import queue
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT = 10


def client(client_id, protocol, username, password):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    c.username_pw_set(username, password)
    return c


def connect(c, host, port):
    """Connects; the CONNACK's reason code (0 is success)."""
    done = queue.Queue()
    c.on_connect = lambda _c, _u, _f, reason, _p: done.put(reason)
    c.connect(host, port)
    c.loop_start()
    reason = done.get(timeout=WAIT)
    return reason.value


def subscribe(c, topic):
    """Subscribes at QoS 1; the SUBACK's reason code."""
    done = queue.Queue()
    c.on_subscribe = lambda _c, _u, _m, reasons, _p: done.put(reasons[0])
    c.subscribe(topic, qos=1)
    return done.get(timeout=WAIT).value


def main():
    host, port, user, token = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    seen = {}

    app = client(f"{user}/paho-app", mqtt.MQTTv311, user, token)
    seen["app_connack"] = connect(app, host, port)
    messages = queue.Queue()
    app.on_message = lambda _c, _u, m: messages.put(m)
    seen["app_suback"] = subscribe(app, "app/app1")

    device = client("dev1@app1", mqtt.MQTTv5, "dev1@app1", "p1")
    seen["device_connack"] = connect(device, host, port)
    acked = queue.Queue()
    device.on_publish = lambda _c, _u, _mid, reason, _p: acked.put(reason)
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = "application/json"
    device.publish("dt/app1/dev1/paho", json.dumps({"from": "paho"}), qos=1, properties=props)
    seen["puback"] = acked.get(timeout=WAIT).value

    while True:
        event = json.loads(messages.get(timeout=WAIT).payload)
        if event["type"] != "io.drogue.connection.v1":
            seen["event"] = event
            break

    seen["other_commands_suback"] = subscribe(device, "cmd/app1/dev2/#")
    seen["own_commands_suback"] = subscribe(device, "cmd/app1/dev1/#")

    wrong = client("dev1@app1", mqtt.MQTTv311, "dev1@app1", "wrong")
    seen["wrong_password_connack"] = connect(wrong, host, port)
    wrong.loop_stop()

    for c in (device, app):
        c.disconnect()
        c.loop_stop()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
