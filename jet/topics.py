"""Topic names (SPEC section 2, docs/protocol.md): built in one place only."""

from __future__ import annotations

import re

NAME_RE = re.compile(r"^[a-z0-9_-]+$")


def output(kind: str, circuit_id: str, gadget_id: str | int, output_num: int) -> str:
    return f"{kind}/{circuit_id}/{gadget_id}/{output_num}"


def circuit_prefix(kind: str, circuit_id: str) -> str:
    return f"{kind}/{circuit_id}/"


def circuit_conf(kind: str, circuit_id: str) -> str:
    return f"{kind}/{circuit_id}/conf"


def circuit_status(kind: str, circuit_id: str) -> str:
    return f"{kind}/{circuit_id}/status"


def container_conf(kind: str, container_id: str) -> str:
    return f"jet/{kind}/{container_id}/conf"


def container_status(kind: str, container_id: str) -> str:
    return f"jet/{kind}/{container_id}/status"


def reply(client_id: str) -> str:
    return f"jet/reply/{client_id}"


ALL_CIRCUIT_STATUS = "+/+/status"
ALL_CONTAINER_STATUS = "jet/+/+/status"
