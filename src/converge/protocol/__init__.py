"""The coordination protocol: its objects, events, codecs, schema.

``Intent``, ``Offer``, ``TaskStart``, ``TaskProgress``,
``TaskDone``, ``Receipt``, ``Attestation`` and ``Event``, with their codecs and JSON Schema.
"""

from __future__ import annotations

from converge.protocol.codec import (
    OBJECT_TYPES,
    ProtocolObject,
    from_json,
    from_msgpack,
    json_schema,
    seal,
    to_json,
    to_msgpack,
    unseal,
)
from converge.protocol.event import Event
from converge.protocol.objects import (
    Attestation,
    Constraints,
    Intent,
    Offer,
    Receipt,
    TaskDone,
    TaskProgress,
    TaskStart,
    TaskStatus,
    Usage,
    output_digest,
)

__all__ = [
    "OBJECT_TYPES",
    "Attestation",
    "Constraints",
    "Event",
    "Intent",
    "Offer",
    "ProtocolObject",
    "Receipt",
    "TaskDone",
    "TaskProgress",
    "TaskStart",
    "TaskStatus",
    "Usage",
    "from_json",
    "from_msgpack",
    "json_schema",
    "output_digest",
    "seal",
    "to_json",
    "to_msgpack",
    "unseal",
]
