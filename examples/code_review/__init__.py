"""A code review graph, run on a real Python file by rule-based reviewers."""
