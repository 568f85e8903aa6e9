"""Seed 002 §3.4: two rule-based debaters argue, then a judge — or a jury of three — decides."""
