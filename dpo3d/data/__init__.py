"""Input: sources, formats and records, the built-in datasets, tokenised sequences and their cache, run logs."""
