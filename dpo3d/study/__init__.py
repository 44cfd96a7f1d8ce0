"""`dpo3d study`: the paper's LLM experiments (§5) as one resumable run.

Scenarios 1-4 (where the chosen and the rejected responses come from) × losses, each
cell trained from the same start with the same budget and the live 3D probes, then
evaluated on held-out test prompts: Tables 1, 2 and 10, the detector's events, every
cell's probe curves and Fig. 4 (reward model vs DPO on scenario-1 pairs); with
``task="poem"``, Table 3 (DPO against RLHF-PPO on the poem rules).

It composes the library's stages (sampling, judges, build-pairs, train_dpo, train_rm,
train_ppo, the evaluators); see :mod:`.run` for the order and :mod:`.progress` for
how a rerun skips what is done.
"""

from .config import DEFAULT_LOSSES, SCENARIOS, LLMJudgeSettings, StudyConfig
from .progress import StudyEvents
from .run import run_study

__all__ = ["DEFAULT_LOSSES", "SCENARIOS", "LLMJudgeSettings", "StudyConfig", "StudyEvents", "run_study"]
