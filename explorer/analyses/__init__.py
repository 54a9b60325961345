"""Analyses: metrics and the experiments built on them (orders, stability, hallucination, guidance,
grid search, schedule conversion experiments, image quality, the scheduler audit). Imports foundations,
solvers, learned and adapters; never figures or the UI."""
