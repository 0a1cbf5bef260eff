"""The transport: MQTT and payloads.

:class:`Link` is a process's one MQTT connection (routing, outbox,
acknowledgement after handling, :class:`Redeliver` for a message a handler
could not handle) over :mod:`.v5` (MQTT 5 on the ``mqtt5`` codec) or, for a
server without MQTT 5, :mod:`.connection`, the one adapter that reaches into
aiomqtt and paho; :mod:`.codec` is msgpack with limits;
:mod:`.broker` parses broker URLs; :class:`Session` (:mod:`.client`) sends
commands and waits for replies.  Topic names are :mod:`jet.address`'s.
"""

from .client import CommandFailed, NoReply, Session
from .link import Link, Redeliver, Subscription, Will

__all__ = ["CommandFailed", "Link", "NoReply", "Redeliver", "Session", "Subscription", "Will"]
