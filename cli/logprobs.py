"""`dpo3d logprobs` (being written)."""

def command() -> None:
    """Score pairs (being written)."""
