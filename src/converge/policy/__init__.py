"""Policy: admission, governance, trust and safety.

Who may join a pool (admission), how its disputes are decided (governance), how
far each agent is trusted (trust), and what an agent may do and consume (safety).

Module paths named by the seeds are public: ``converge.policy.trust``, ``converge.policy.safety``.
"""

from __future__ import annotations

from converge.policy.admission import (
    AdmissionPolicy,
    AdmissionRequest,
    AdmissionResult,
    AllOf,
    Allowlist,
    AnyOf,
    MinTrust,
    OpenAdmission,
    TokenAdmission,
    admission_spec,
    admit,
    parse_admission,
    token_admission,
)
from converge.policy.governance import (
    Democratic,
    Dictatorial,
    DisputeOutcome,
    GovernanceModel,
    Threshold,
    TrustWeighted,
    decide,
    governance_spec,
    parse_governance,
)
from converge.policy.safety import (
    ActionPolicy,
    AgentUsage,
    DecisionsRefused,
    ResourceLimits,
    SafetyViolation,
    accepted,
    raise_for,
    validate_safety,
)
from converge.policy.trust import (
    Outcome,
    TrustModel,
    TrustPolicy,
    TrustRecord,
    TrustWeights,
)

__all__ = [
    "ActionPolicy",
    "AdmissionPolicy",
    "AdmissionRequest",
    "AdmissionResult",
    "AgentUsage",
    "AllOf",
    "Allowlist",
    "AnyOf",
    "DecisionsRefused",
    "Democratic",
    "Dictatorial",
    "DisputeOutcome",
    "GovernanceModel",
    "MinTrust",
    "OpenAdmission",
    "Outcome",
    "ResourceLimits",
    "SafetyViolation",
    "Threshold",
    "TokenAdmission",
    "TrustModel",
    "TrustPolicy",
    "TrustRecord",
    "TrustWeighted",
    "TrustWeights",
    "accepted",
    "admission_spec",
    "admit",
    "decide",
    "governance_spec",
    "parse_admission",
    "parse_governance",
    "raise_for",
    "token_admission",
    "validate_safety",
]
