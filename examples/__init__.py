"""Examples of converge, importable from the repository root (``examples.patterns.agents``)."""
