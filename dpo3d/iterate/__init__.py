"""On-policy iterative DPO (``dpo3d iterate``): rounds of sample → judge → build-pairs → train-dpo, each
round starting from the previous round's model, one probe set across all rounds."""

from .config import REFERENCES, IterateConfig
from .rounds import IterateEvents, run_iterate

__all__ = ["REFERENCES", "IterateConfig", "IterateEvents", "run_iterate"]
