"""Policy: who may join a pool (admission) and how its disputes are decided (governance)."""

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

__all__ = [
    "AdmissionPolicy",
    "AdmissionRequest",
    "AdmissionResult",
    "AllOf",
    "Allowlist",
    "AnyOf",
    "Democratic",
    "Dictatorial",
    "DisputeOutcome",
    "GovernanceModel",
    "MinTrust",
    "OpenAdmission",
    "Threshold",
    "TokenAdmission",
    "TrustWeighted",
    "admission_spec",
    "admit",
    "decide",
    "governance_spec",
    "parse_admission",
    "parse_governance",
    "token_admission",
]
