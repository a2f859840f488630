"""Training: the one loop, learning-rate schedules, exact-resume state, step snapshots, datasets, per-layer recompute."""
