"""The equal-budget study of 1cycle against 2026's schedules (`python -m experiments.budget.study`)."""
