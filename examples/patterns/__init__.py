"""One YAML graph per orchestration pattern (seed 002 §3), with the agents they reference."""
