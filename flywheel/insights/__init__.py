"""Stage: insights for engineers. Drift of production inputs, the label audit (confident
learning), the embedding map and the plots."""
