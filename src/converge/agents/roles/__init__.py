"""The five agent roles of seed 002 §2: ``Worker``, ``Router``, ``Critic``, ``Supervisor``,
``Planner``.

Each is an ``Agent`` with a deterministic rule mode (no key, no network: the default) and an
LLM mode switched on by giving it a ``provider``. Each is also a YAML kind (``kind: router``
…, declared in ``converge.orchestration.kinds.roles``).
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
