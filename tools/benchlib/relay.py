"""The baseline for the MQTT hop: a plain paho-mqtt relay, topic A -> topic B.

    python relay.py PORT QOS SRC DST

Subscribes ``SRC`` at ``QOS`` and republishes every payload unchanged on
``DST`` at the same QoS, from paho's own network loop: the least any
process can do to move a message from one topic to another in Python.  Up
to 256 QoS 1 publishes in flight, like a JET pack's link.  Prints ``ready``
once the subscription is acknowledged.
"""

from __future__ import annotations

import sys
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

INFLIGHT = 256  # jet.mqtt.PUBLISH_WINDOW


def main(argv: list[str]) -> int:
    port, qos, src, dst = int(argv[0]), int(argv[1]), argv[2], argv[3]
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-relay-{qos}",
        protocol=mqtt.MQTTv311,
    )
    client.max_inflight_messages_set(INFLIGHT)
    publish = client.publish

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, _rc: Any, _p: Any) -> None:
        c.subscribe(src, qos)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
        print("ready", flush=True)

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        publish(dst, message.payload, qos)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
