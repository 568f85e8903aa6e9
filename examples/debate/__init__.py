"""A debate: two rule-based debaters argue, then a judge — or a jury of three — decides."""
