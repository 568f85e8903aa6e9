"""Pools: named groups of agents, admission and governance.

Each pool has an admission policy and a governance model.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec

from converge.core.ids import new_id
from converge.errors import ValidationError

__all__ = ["Pool"]

_POOL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-:]*$")


class Pool(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A group of agents that see the same tasks and govern themselves by the same rules.

    ``admission`` and ``governance`` are specs interpreted by ``converge.policy``: a ``kind`` plus
    its parameters, e.g. ``{"kind": "allowlist", "members": [...]}`` or
    ``{"kind": "dictatorial", "leader": "did:key:…"}``. An empty spec means open admission and
    democratic governance.
    """

    name: str
    """Human-readable name."""
    id: str = msgspec.field(default_factory=new_id)
    """Unique id (letters, digits and ``_ . - :``)."""
    description: str = ""
    """What the pool is for."""
    topics: tuple[str, ...] = ()
    """Topics its members follow."""
    required_capabilities: tuple[str, ...] = ()
    """Capability requirements every member must meet."""
    admission: dict[str, Any] = msgspec.field(default_factory=dict)
    """Who may join (see class docstring)."""
    governance: dict[str, Any] = msgspec.field(default_factory=dict)
    """How disputes are decided (see class docstring)."""
    max_members: int | None = None
    """A cap on membership; None: unbounded."""
    created_by: str = ""
    """The did of the creator."""
    created_at: float = msgspec.field(default_factory=time.time)
    """When it was created."""
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    """Free-form labels for people and tools."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _POOL_ID.match(self.id):
            raise ValidationError(f"invalid pool id {self.id!r}", field="id")
        if not isinstance(self.name, str) or not self.name:
            raise ValidationError("a pool needs a non-empty `name`", field="name")
        if self.max_members is not None and self.max_members < 1:
            raise ValidationError(
                f"max_members must be >= 1 or None, not {self.max_members!r}", field="max_members"
            )
