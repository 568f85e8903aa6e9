"""Admission policies: who may join a pool.

A pool's ``admission`` spec is plain data (stored with the pool, shown in traces) that names a
policy by ``kind``::

    {"kind": "open"}
    {"kind": "allowlist", "members": ["did:key:z6Mk…", …]}
    {"kind": "token", "sha256": "<hex digest of the token>"}      # see token_admission()
    {"kind": "min_trust", "score": 0.6}
    {"kind": "all_of", "policies": [<spec>, …]}
    {"kind": "any_of", "policies": [<spec>, …]}

An empty spec means open admission. ``parse_admission(spec)`` checks a spec and names the bad
field (``policies[1].score``); ``admit(policy, request)`` decides, with a reason either way. A token
policy stores only the token's sha256, never the token, and compares in constant time. Specs
are parsed into msgspec tagged unions, so a bad one names its field. ``min_trust`` needs a trust
score: an agent whose score is unknown is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from converge.core.codec_errors import validation_error
from converge.errors import ValidationError

__all__ = [
    "AdmissionPolicy",
    "AdmissionRequest",
    "AdmissionResult",
    "AllOf",
    "Allowlist",
    "AnyOf",
    "MinTrust",
    "OpenAdmission",
    "TokenAdmission",
    "admission_spec",
    "admit",
    "parse_admission",
    "token_admission",
]


class _Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    pass


class OpenAdmission(_Spec, frozen=True, tag="open"):
    """Anyone may join."""


class Allowlist(_Spec, frozen=True, tag="allowlist"):
    """Only the listed agents may join."""

    members: frozenset[str]
    """The dids admitted."""


class TokenAdmission(_Spec, frozen=True, tag="token"):
    """Whoever presents the token (``credentials["token"]``) may join."""

    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    """Hex sha256 of the token; the token itself is never stored."""


class MinTrust(_Spec, frozen=True, tag="min_trust"):
    """Agents whose trust score is at least ``score`` may join."""

    score: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    """The least trust score admitted, 0 to 1."""


class AllOf(_Spec, frozen=True, tag="all_of"):
    """Every listed policy must admit."""

    policies: tuple[AdmissionPolicy, ...]
    """The policies, at least one."""


class AnyOf(_Spec, frozen=True, tag="any_of"):
    """At least one listed policy must admit."""

    policies: tuple[AdmissionPolicy, ...]
    """The policies, at least one."""


AdmissionPolicy = OpenAdmission | Allowlist | TokenAdmission | MinTrust | AllOf | AnyOf
"""Any admission policy."""


class AdmissionRequest(msgspec.Struct, frozen=True):
    """Who asks to join, and what they bring."""

    agent_id: str
    """The did of the authenticated agent asking."""
    credentials: Mapping[str, Any] = msgspec.field(default_factory=dict)
    """What the agent presents (``token``…)."""
    trust_score: float | None = None
    """The agent's current trust score, when the pool knows it."""


class AdmissionResult(msgspec.Struct, frozen=True):
    """The verdict, with its reason."""

    admitted: bool
    """Whether the agent may join."""
    reason: str
    """Why, in words (for the event log and the refused agent)."""


def token_admission(token: str) -> TokenAdmission:
    """A token policy for ``token`` (only its sha256 is kept)."""
    return TokenAdmission(sha256=_digest(token))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_admission(spec: Mapping[str, Any] | AdmissionPolicy | None) -> AdmissionPolicy:
    """The policy a spec describes (an empty or None spec is open admission).

    Raises:
        ValidationError: an unknown ``kind`` or a bad field, named with its path.
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return OpenAdmission()
    if isinstance(spec, _Spec):
        policy: AdmissionPolicy = spec
    else:
        try:
            policy = msgspec.convert(spec, AdmissionPolicy)
        except msgspec.ValidationError as exc:
            raise validation_error(exc, "admission policy") from exc
    _check_composites(policy, "")
    return policy


def _check_composites(policy: AdmissionPolicy, path: str) -> None:
    if isinstance(policy, (AllOf, AnyOf)):
        if not policy.policies:
            raise ValidationError(
                f"{policy.__struct_config__.tag} needs at least one policy",
                field=f"{path}policies",
            )
        for i, inner in enumerate(policy.policies):
            _check_composites(inner, f"{path}policies[{i}].")


def admission_spec(policy: AdmissionPolicy) -> dict[str, Any]:
    """The plain-data spec of ``policy`` (what a pool stores)."""
    spec: dict[str, Any] = msgspec.to_builtins(policy)
    return spec


def admit(policy: AdmissionPolicy, request: AdmissionRequest) -> AdmissionResult:
    """Decide whether ``request`` is admitted by ``policy``."""
    if isinstance(policy, OpenAdmission):
        return AdmissionResult(True, "open pool")
    if isinstance(policy, Allowlist):
        if request.agent_id in policy.members:
            return AdmissionResult(True, "on the allowlist")
        return AdmissionResult(False, "not on the pool's allowlist")
    if isinstance(policy, TokenAdmission):
        token = request.credentials.get("token")
        if not isinstance(token, str) or not token:
            return AdmissionResult(False, "the pool requires a token and none was presented")
        if hmac.compare_digest(_digest(token), policy.sha256):
            return AdmissionResult(True, "presented the pool's token")
        return AdmissionResult(False, "the token presented is not the pool's token")
    if isinstance(policy, MinTrust):
        score = request.trust_score
        if score is None:
            return AdmissionResult(False, f"trust >= {policy.score:g} required; score unknown")
        if score >= policy.score:
            return AdmissionResult(True, f"trust {score:.3f} >= {policy.score:g}")
        return AdmissionResult(False, f"trust {score:.3f} is below the required {policy.score:g}")
    results = [admit(inner, request) for inner in policy.policies]
    if isinstance(policy, AllOf):
        refused = [r.reason for r in results if not r.admitted]
        if refused:
            return AdmissionResult(False, "; ".join(refused))
        return AdmissionResult(True, "; ".join(r.reason for r in results))
    granted = [r.reason for r in results if r.admitted]
    if granted:
        return AdmissionResult(True, granted[0])
    return AdmissionResult(False, "none of: " + "; ".join(r.reason for r in results))
