"""The experiment type, the registry that discovers experiments, the results cache, the CLI."""
