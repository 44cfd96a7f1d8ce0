"""`sft`: supervised fine-tuning on response tokens only, through the shared loop.

Data: records with ``prompt`` and ``completion``; or pairs (the chosen side is
the target); or records with a ``reference`` (a built-in dataset's worked
solutions, the poem sets' real poems). The loss is the mean over examples of
each response's per-token negative log-likelihood, so N data-parallel processes
train exactly like one process with the same global batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..datasets import load_prompts
from ..logprobs import collate, score_sequences, sequence_logps
from ..models import LoadOptions, load_causal_lm, load_tokenizer
from ..records import RecordError, is_text
from ..sequences import EncodedPair, encode_pair
from .config import LoopConfig
from .loop import LoopCallbacks, RunResult, train

TARGET_FIELDS = ("completion", "chosen", "reference")


def sft_examples(source: str | Path, tokenizer, max_length: int, limit: int | None = None) -> list[EncodedPair]:
    """Encode (prompt, target) examples; the target is the first of completion/chosen/reference present."""
    records = load_prompts(source, limit=limit)
    examples = []
    for number, record in enumerate(records, start=1):
        target = next((record[key] for key in TARGET_FIELDS if key in record), None)
        if not is_text(record.get("prompt")) or not is_text(target):
            raise RecordError(str(source), number, f"an SFT record needs 'prompt' and one of {', '.join(TARGET_FIELDS)} as text")
        pair = encode_pair(tokenizer, record["prompt"], target, max_length)
        if not pair.response_ids:
            raise RecordError(str(source), number, "the response is empty after truncation (raise --max-length)")
        examples.append(pair)
    return examples


@dataclass
class SFTTask:
    examples: list[EncodedPair]
    pad_id: int
    eval_examples: list[EncodedPair] | None = None
    eval_every: int = 0
    padding_side: str = "right"
    total_steps: int = 0  # set by the loop: the last step is always evaluated

    def lengths(self) -> list[int]:
        return [len(example) for example in self.examples]

    def loss(self, model, indices: list[int]):
        device = next(model.parameters()).device
        logps = sequence_logps(model, collate([self.examples[i] for i in indices], self.pad_id, self.padding_side).to(device))
        nll = -logps.mean
        return nll.mean(), {"loss": nll, "response_logp": logps.sum, "response_tokens": logps.count}

    def probe(self, model, step: int, indices: list[int]) -> dict[str, float]:
        if not self.eval_examples or not (step in (0, self.total_steps) or (self.eval_every and step % self.eval_every == 0)):
            return {}
        with torch.no_grad():
            logps = score_sequences(model, self.eval_examples, self.pad_id, 16, self.padding_side)
        return {"eval_loss": float((-logps.mean).mean())}

    def check(self, record: dict) -> list[str]:
        return []


@dataclass
class SFTRunConfig:
    model: str
    data: str
    loop: LoopConfig
    eval_data: str | None = None
    eval_every: int = 10
    max_length: int = 1024
    limit: int | None = None
    load: LoadOptions = field(default_factory=LoadOptions)


def train_sft(config: SFTRunConfig, callbacks: LoopCallbacks | None = None, on_status=lambda message: None) -> RunResult:
    on_status(f"loading {config.model}")
    tokenizer = load_tokenizer(config.model, config.load)
    model = load_causal_lm(config.model, config.load)
    on_status("encoding data")
    examples = sft_examples(config.data, tokenizer, config.max_length, config.limit)
    eval_examples = sft_examples(config.eval_data, tokenizer, config.max_length) if config.eval_data else None
    config.loop.extra = {"task": "sft", "model": config.model, "data": str(config.data), "examples": len(examples),
                         "eval_data": config.eval_data, "max_length": config.max_length}
    task = SFTTask(examples, tokenizer.pad_token_id, eval_examples, config.eval_every, config.load.padding_side)
    on_status("training")
    return train(model, tokenizer, task, config.loop, callbacks)
