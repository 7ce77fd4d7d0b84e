"""Stage: selection. Which pool samples get a pseudo-label, which go to review: one module
per strategy (named in ``strategies.STRATEGIES``), threshold calibration, the outcome."""
