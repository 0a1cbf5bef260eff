"""The baseline for the MQTT hop: a plain paho-mqtt relay, ``SRC/#`` -> ``DST/...``.

    python relay.py PORT SRC DST

Subscribes ``SRC/#`` at QoS 1 (so a QoS 0 publish is delivered at 0 and a QoS 1
publish at 1) and republishes every payload unchanged on ``DST/<rest>`` at the
QoS it arrived with, from paho's own network loop: the least any process can
do to move a message from one topic to another in Python.  Up to 256 QoS 1
publishes in flight, like a JET pack's link.  Prints ``ready`` once the
subscription is acknowledged.
"""

from __future__ import annotations

import sys
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

INFLIGHT = 256  # jet.transport.link's publish window


def main(argv: list[str]) -> int:
    port, src, dst = int(argv[0]), argv[1], argv[2]
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-relay", protocol=mqtt.MQTTv311
    )
    client.max_inflight_messages_set(INFLIGHT)
    publish = client.publish
    cut = len(src) + 1

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        c.subscribe(f"{src}/#", 1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        print("ready", flush=True)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        publish(f"{dst}/{message.topic[cut:]}", message.payload, message.qos)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
