"""One YAML graph per orchestration pattern, with the agents they reference."""
