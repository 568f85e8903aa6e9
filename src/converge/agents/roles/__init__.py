"""The five agent roles: worker, router, critic, supervisor, planner.

``Worker``, ``Router``, ``Critic``, ``Supervisor``, ``Planner``.

Each is an ``Agent`` with a deterministic rule mode (no key, no network: the default) and an
LLM mode switched on by giving it a ``provider`` (any ``LLMProvider``; in YAML ``provider:
"module:attr"`` naming a provider or a factory of one); ``.mode`` says which. The roles use only
``LLMProvider.chat(..., response_schema=)``: a structured answer is checked, shown back with the
problem and asked again, up to ``attempts`` (3) calls, then ``StructuredOutputError`` (a
``ValidationError`` with ``role``, ``attempts``, ``problems`` and the last ``output``);
provider failures are left to the node's retry policy (``converge.agents._structured``). Usage is
reported to ``ctx.report_usage`` on every call. Each role is also a YAML kind (``kind: router``
…, declared in ``converge.orchestration.kinds.roles``), whose option errors carry the file, the
line and ``agents.<name>.<option>``.

The critic's ``json_schema`` criterion uses the ``jsonschema`` package (the ``schema`` extra, in
``dev`` too); without it such a criterion is refused when the critic is built.
"""

from converge.agents.roles.critic import Criteria, Critic
from converge.agents.roles.planner import Planner
from converge.agents.roles.router import Router
from converge.agents.roles.supervisor import Supervisor
from converge.agents.roles.worker import Worker
from converge.errors import NoMatchingRoute, StructuredOutputError

__all__ = [
    "Criteria",
    "Critic",
    "NoMatchingRoute",
    "Planner",
    "Router",
    "StructuredOutputError",
    "Supervisor",
    "Worker",
]
