"""``tartok-tui demo``: a generated Emilia-style dataset, a tiny random model, the real run."""
