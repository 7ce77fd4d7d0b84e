"""Self-supervised learning (SEER lineage): the loop, one module per method, embedding."""
