"""Seed 002 §4.1's code review graph, run on a real Python file by rule-based reviewers."""
