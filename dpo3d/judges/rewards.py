"""Sequence rewards for PPO: ``--reward math | poem | slogan | contains:TEXT | rm:CHECKPOINT``.

A reward maps candidate records (prompt record fields + ``completion``) to one
number each. The rule rewards are the judges' own functions (math-verify, the
poem and slogan rules), so PPO optimises exactly what ``judge`` and the
evaluators measure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dpo3d.models.loading import LoadOptions

RewardFn = Callable[[Sequence[dict]], list[float]]

REWARD_HELP = (
    "math (1 if the \\boxed{} answer equals the record's answer, by math-verify), poem / slogan (the mean "
    "of the paper's rule metrics), contains:TEXT (1 if the completion contains TEXT), rm:CHECKPOINT "
    "(a reward model from `dpo3d train-rm`)"
)


def _math(records: Sequence[dict]) -> list[float]:
    from dpo3d.judges.math_judge import gold_text, verify_answer

    return [1.0 if verify_answer(r["completion"], gold_text(r["answer"]))["correct"] else 0.0 for r in records]


def _rule(score_fn) -> RewardFn:
    return lambda records: [float(score_fn(r, r["completion"])["score"]) for r in records]


def needed_fields(spec: str) -> tuple[str, ...]:
    """Fields each prompt record must carry for this reward."""
    return {"math": ("answer",), "poem": ("form",), "slogan": ("length",)}.get(spec, ())


def make_reward(spec: str, device=None, options: LoadOptions = LoadOptions(), max_length: int = 1024) -> RewardFn:
    """The reward function a ``--reward`` spec names; ValueError for an unknown one."""
    if spec == "math":
        return _math
    if spec == "poem":
        from dpo3d.poetry import score_poem

        return _rule(score_poem)
    if spec == "slogan":
        from dpo3d.poetry import score_slogan

        return _rule(score_slogan)
    if spec.startswith("contains:") and len(spec) > len("contains:"):
        target = spec[len("contains:") :]
        return lambda records: [1.0 if target in r["completion"] else 0.0 for r in records]
    if spec.startswith("rm:"):
        from dpo3d.judges.reward_model import is_reward_model, load_reward_model, reward_of_records

        path = spec[3:]
        if not is_reward_model(path):
            raise ValueError(f"--reward {spec}: {path} is not a reward-model folder (train one with `dpo3d train-rm`)")
        model, tokenizer = load_reward_model(path, options)
        if device is not None:
            model.to(device)
        return lambda records: reward_of_records(model, tokenizer, records, max_length)
    raise ValueError(f"--reward {spec!r}: use {REWARD_HELP}")
