"""converge: coordinate many agents, LLM-backed or plain code.

Subpackages: ``converge.core`` (identity, messages, tasks, decisions, agents, tools),
``converge.protocol`` (intents, offers, task messages, receipts, events and their codecs),
``converge.store`` (the event-logged stores) and ``converge.errors``.
"""

from __future__ import annotations

from converge._version import __version__

__all__ = ["__version__"]
