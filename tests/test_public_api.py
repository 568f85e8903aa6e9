"""The public surface of each subpackage, pinned: an export added or removed shows up here."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_API: dict[str, list[str]] = {
    "converge": ["__version__"],
    "converge.core": [
        "AcceptProposal",
        "Agent",
        "CancelTask",
        "Capability",
        "CapabilitySet",
        "ClaimTask",
        "Clock",
        "CreatePool",
        "DECISION_TYPES",
        "Decision",
        "Delegate",
        "FailTask",
        "FunctionTool",
        "IdFactory",
        "Identity",
        "InvokeTool",
        "JoinPool",
        "LeavePool",
        "ManualClock",
        "Message",
        "Pool",
        "Propose",
        "RejectProposal",
        "ReplayGuard",
        "ReportTask",
        "Requirement",
        "RevokeDelegation",
        "RunContext",
        "SendMessage",
        "Signed",
        "SubmitBid",
        "SubmitTask",
        "SystemClock",
        "TERMINAL_STATES",
        "TRANSITIONS",
        "Task",
        "TaskState",
        "Tool",
        "ToolRegistry",
        "Topic",
        "Vote",
        "check_transition",
        "decision_from_builtins",
        "new_id",
        "system_clock",
        "unseal",
    ],
    "converge.protocol": [
        "Attestation",
        "Constraints",
        "Event",
        "Intent",
        "OBJECT_TYPES",
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
    ],
    "converge.store": ["Entry", "MemoryStore", "SQLiteStore", "Store", "Transaction"],
    "converge.policy": [
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
    ],
    "converge.network": ["Inbox", "LocalNetwork"],
    "converge.runtime": ["AgentRuntime", "StandardExecutor", "sign_and_send"],
    "converge.coordination": [
        "NEGOTIATION_TRANSITIONS",
        "REGISTER_KIND",
        "AgentDescriptor",
        "AgentResult",
        "Ballot",
        "BallotRefused",
        "BallotResult",
        "BallotState",
        "CapabilityDirectory",
        "ConflictStrategy",
        "Consensus",
        "DiscoveryService",
        "LeaseLost",
        "Membership",
        "NegotiationProtocol",
        "NegotiationRefused",
        "NegotiationSession",
        "NegotiationState",
        "PoolManager",
        "Proposal",
        "ProposalSuperseded",
        "Resolution",
        "ResolutionFailed",
        "TaskManager",
        "TrustSource",
        "VoteAfterDeadline",
        "majority",
        "normalize_text",
        "plurality",
        "resolve",
    ],
    "converge.errors": [
        "AgentModeError",
        "ConflictError",
        "ConvergeError",
        "IdentityError",
        "InvalidTransition",
        "OrchestrationError",
        "PolicyViolation",
        "ProtocolError",
        "ReplayedMessage",
        "SchemaVersionError",
        "SignatureError",
        "StaleMessage",
        "StateError",
        "StoreClosed",
        "StoreError",
        "TaskConflict",
        "TransportError",
        "ValidationError",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_all_matches_the_checked_in_list(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC_API[module])
    assert len(set(mod.__all__)) == len(mod.__all__), "duplicate names in __all__"


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_every_exported_name_is_importable(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is in __all__ but missing"
        exec(f"from {module} import {name}", {})


@pytest.mark.parametrize(
    "module",
    [
        "converge.core",
        "converge.protocol",
        "converge.store",
        "converge.coordination",
        "converge.policy",
        "converge.network",
        "converge.runtime",
    ],
)
def test_exported_names_are_documented(module: str) -> None:
    mod = importlib.import_module(module)
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (obj.__doc__ or "").strip(), f"{module}.{name} has no docstring"
