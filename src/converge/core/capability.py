"""Capabilities: what an agent can do, with versions.

Requirements select them by name and version range. A version is a PEP 440 version and a
requirement's range a PEP 440 specifier set (``summarize>=1.2,<2``), both parsed by
``packaging`` (a core dependency: well kept, tiny, and the reference implementation of those
rules) and cached. A range's versions are turned into numbers when it is parsed, not at its
first match as ``packaging`` would: a number past Python's 4,300-digit limit is a
``ValidationError`` there, never a ``ValueError`` out of a visibility query. A requirement's
text is split in one pass (the name, then the rest stripped): the single regex it replaced
backtracked quadratically over a run of spaces.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from converge.core.clip import clip
from converge.errors import ValidationError

__all__ = ["Capability", "CapabilitySet", "Requirement"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-/]*$")
# The name at the start; the rest, stripped, is the version range. (One pattern for both, with a
# lazy `(.*?)` before `\s*$`, took time quadratic in a run of spaces: 40,000 of them took 6 s.)
_REQUIREMENT_NAME = re.compile(r"\s*([a-z0-9][a-z0-9_.\-/]*)")


@functools.lru_cache(maxsize=4096)
def _version(text: str) -> Version:
    try:
        return Version(text)
    except ValueError:  # InvalidVersion, or a number past Python's 4,300-digit int limit
        raise ValidationError(f"invalid version {clip(text)!r}", field="version") from None


@functools.lru_cache(maxsize=4096)
def _specifier(text: str) -> SpecifierSet:
    try:
        specifiers = SpecifierSet(text)
        # `packaging` turns a range's version into numbers only when it compares one: check
        # them now, so an unusable range (a 5,000-digit number) is refused here, not in a match.
        for spec in specifiers:
            if spec.operator != "===":  # arbitrary equality compares strings
                Version(spec.version.removesuffix(".*"))
    except ValueError:  # InvalidSpecifier, InvalidVersion, or the int limit
        raise ValidationError(
            f"invalid version range {clip(text)!r} (use e.g. '>=1.2,<2')", field="versions"
        ) from None
    return specifiers


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"invalid capability name {clip(name)!r}: lower-case letters, digits and _ . - /",
            field="name",
        )


class Capability(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Something an agent can do, such as ``summarize`` version ``1.2.0``."""

    name: str
    """Lower-case identifier: ``summarize``, ``code.review``, ``gpu/a100``."""
    version: str = "1.0.0"
    """A PEP 440 version (semantic versions are valid PEP 440 versions)."""
    description: str = ""
    """What it does, for people and for LLM routers."""
    constraints: dict[str, Any] = msgspec.field(default_factory=dict)
    """Limits of the offer: ``max_input_tokens``, ``languages``, ``max_concurrency``…"""
    costs: dict[str, float] = msgspec.field(default_factory=dict)
    """Prices by unit: ``per_call``, ``per_1k_tokens``, ``per_second``…"""

    def __post_init__(self) -> None:
        _check_name(self.name)
        _version(self.version)

    @classmethod
    def parse(cls, text: str) -> Capability:
        """``"summarize"`` or ``"summarize@1.2.0"``."""
        name, _, version = text.partition("@")
        return cls(name.strip(), version.strip() or "1.0.0")

    def satisfies(self, requirement: Requirement | str) -> bool:
        """Whether this capability meets ``requirement``."""
        req = Requirement.parse(requirement) if isinstance(requirement, str) else requirement
        return req.matches(self)


class Requirement(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A need for a capability: a name and an optional version range (``>=1.2,<2``)."""

    name: str
    """The capability name."""
    versions: str = ""
    """A PEP 440 specifier set; empty accepts any version."""

    def __post_init__(self) -> None:
        _check_name(self.name)
        _specifier(self.versions)

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """``"summarize"``, ``"summarize>=1.2,<2"`` or ``"summarize==1.4.0"``."""
        if not isinstance(text, str):
            raise ValidationError(
                f"a capability requirement is a str, not {type(text).__name__}",
                field="capability",
            )
        return _parse_requirement(cls, text)  # a frozen value: the same text, the same one

    def matches(self, capability: Capability) -> bool:
        """Whether ``capability`` has this name and a version in range."""
        if capability.name != self.name:
            return False
        if not self.versions:
            return True
        return _specifier(self.versions).contains(_version(capability.version), prereleases=True)

    def __str__(self) -> str:
        return f"{self.name}{self.versions}"


@functools.lru_cache(maxsize=4096)
def _parse_requirement(cls: type[Requirement], text: str) -> Requirement:
    """Visibility checks parse each task's requirements on every query: a few distinct
    strings, parsed once each."""
    m = _REQUIREMENT_NAME.match(text)
    if m is None:
        raise ValidationError(f"invalid capability requirement {clip(text)!r}", field="capability")
    return cls(m.group(1), text[m.end() :].strip())


class CapabilitySet:
    """An agent's capabilities, at most one version per name, looked up by name."""

    __slots__ = ("_by_name",)

    def __init__(self, capabilities: Iterable[Capability | str] = ()) -> None:
        self._by_name: dict[str, Capability] = {}
        for cap in capabilities:
            self.add(cap)

    def add(self, capability: Capability | str) -> None:
        """Add (or replace the version of) a capability."""
        cap = Capability.parse(capability) if isinstance(capability, str) else capability
        self._by_name[cap.name] = cap

    def get(self, name: str) -> Capability | None:
        """The capability called ``name``, or None."""
        return self._by_name.get(name)

    @property
    def names(self) -> frozenset[str]:
        """The capability names, for indexes."""
        return frozenset(self._by_name)

    def satisfies(self, requirement: Requirement | str) -> bool:
        """Whether some capability meets ``requirement``."""
        req = Requirement.parse(requirement) if isinstance(requirement, str) else requirement
        cap = self._by_name.get(req.name)
        return cap is not None and req.matches(cap)

    def satisfies_all(self, requirements: Iterable[Requirement | str]) -> bool:
        """Whether every requirement is met."""
        return all(self.satisfies(r) for r in requirements)

    def missing(self, requirements: Iterable[Requirement | str]) -> list[str]:
        """The requirements not met, as text."""
        return [str(r) for r in requirements if not self.satisfies(r)]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Capability]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        caps = ", ".join(f"{c.name}@{c.version}" for c in self)
        return f"CapabilitySet([{caps}])"
