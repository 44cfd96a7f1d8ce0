"""The reward-model judge: a model trained by ``dpo3d train-rm`` scores each (prompt, completion).

``score`` is the reward r(x, y), an unbounded real (only its order matters to ``build-pairs``);
``verdict`` is ``{reward}``. Records are read in chunks of ``batch_size * chunk_batches``, each
scored in length-sorted batches (:func:`dpo3d.judges.reward_model.reward_of_records`), so a large input
is never held whole. The only judge that needs torch: it is imported when a model is loaded or
scored, never by importing this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from dpo3d.data.formats import as_completion
from dpo3d.data.inputs import chunks

from . import scored
from .base import Judge, Progress, ScoreTally


class RewardModelJudge(Judge):
    """Scores records with a loaded ``(model, tokenizer)`` reward model (see :meth:`load`)."""

    def __init__(self, model: Any, tokenizer: Any, name: str = "rm", max_length: int | None = None,
                 batch_size: int = 16, chunk_batches: int = 16):
        if batch_size < 1 or chunk_batches < 1:
            raise ValueError(f"the batch size and chunk length must be at least 1, got {batch_size}, {chunk_batches}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = max_length
        self.batch_size = batch_size
        self.chunk_batches = chunk_batches
        self.tally = ScoreTally()

    @classmethod
    def load(cls, spec: str, options=None, device: str | None = None, **settings) -> RewardModelJudge:
        """The judge of a reward-model folder, named ``rm:<folder name>``; ValueError for any other model."""
        from dpo3d.judges.reward_model import is_reward_model, load_reward_model
        from dpo3d.models.loading import LoadOptions, display_name, pick_device

        if not is_reward_model(spec):
            raise ValueError(
                f"--rm {spec}: not a reward-model folder (a sequence-classification model); train one with `dpo3d train-rm`"
            )
        model, tokenizer = load_reward_model(spec, options if options is not None else LoadOptions())
        model.to(pick_device(device or "auto"))
        return cls(model, tokenizer, name=f"rm:{display_name(spec)}", **settings)

    def check(self, record: dict, source: str = "<input>", position: int | None = None) -> dict:
        """A prompt and completion (or a TRL ``messages`` conversation) to score."""
        return as_completion(record, source, position)

    def judge(self, records: Iterable[Mapping], on_progress: Progress | None = None) -> Iterator[dict]:
        from dpo3d.judges.reward_model import reward_of_records

        self.tally = ScoreTally()
        for chunk in chunks(records, self.batch_size * self.chunk_batches):
            rewards = reward_of_records(self.model, self.tokenizer, chunk, self.max_length, self.batch_size, on_progress)
            for record, reward in zip(chunk, rewards, strict=True):
                self.tally.add(reward)
                yield scored(record, self.name, reward, {"reward": reward})

    def summary(self) -> str:
        """``judge rm: 8 scored, reward mean 0.125, min -1.500, max 2.000``."""
        tally = self.tally
        if not tally.count:
            return "judge rm: 0 scored"
        return (f"judge rm: {tally.count} scored, reward mean {tally.mean:.3f}, "
                f"min {tally.low:.3f}, max {tally.high:.3f}")
