"""Pairs: chosen/rejected pairs built from judged samples, pair sets, minimal-edit pairs."""
