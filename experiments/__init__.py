"""Experiment tooling: run configs over seeds, collect results, tables and plots."""
