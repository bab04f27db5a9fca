"""What launchers do with trained runs: evaluate, predict, benchmark, compare."""
