"""Sensitivity analysis of a search's experiment dir: ``python -m analysis EXPERIMENT_DIR``."""
