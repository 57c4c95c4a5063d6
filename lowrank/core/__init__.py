"""The chapter-agnostic core: models, the one trainer, losses, metrics, merging and flows."""
