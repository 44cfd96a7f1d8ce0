"""Scoring: per-token log-probs of records and pairs, the LM head chunked or full, packing, CHES."""
