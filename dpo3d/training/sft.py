"""`sft`: supervised fine-tuning on response tokens only, through the shared loop.

Data: records with ``prompt`` and ``completion``; or pairs (the chosen side is
the target); or records with a ``reference`` (a built-in dataset's worked
solutions, the poem sets' real poems). The loss is the mean over examples of
each response's per-token negative log-likelihood, so N data-parallel processes
train exactly like one process with the same global batch.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dpo3d.config.fields import option
from dpo3d.data import formats, inputs
from dpo3d.data.datasets import BUILTINS, load_prompts
from dpo3d.data.encoding_cache import default_cache, encode_cached
from dpo3d.data.records import RecordError
from dpo3d.data.schema import is_text
from dpo3d.data.sequences import EncodedPair
from dpo3d.models import lora
from dpo3d.models.loading import LoadOptions, load_causal_lm, load_tokenizer
from dpo3d.models.lora import LoRAConfig
from dpo3d.scoring.batches import collate
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.logprobs import score_sequences, sequence_logps

from .config import LoopConfig, is_main_process
from .loop import train
from .run_folder import LoopCallbacks, RunResult
from .task import Task

#: SFT's learning rate by default: the loop's 1e-6 suits preference training, too small for SFT
SFT_LR = 1e-5
TARGET_FIELDS = ("completion", "chosen", "reference")


def sft_record(record: dict, source: str, position: int) -> dict:
    """An SFT example in any of the accepted shapes, as a record with ``prompt`` and a target:
    a ``messages`` conversation (its final assistant turn; earlier turns are the prompt), a pair
    in any TRL preference format (its chosen response), or ``prompt`` with ``completion`` or
    ``reference`` (a built-in's worked solution, a poem set's real poem)."""
    if "messages" in record and "completion" not in record:
        return formats.as_completion(record, source, position)
    if formats.is_pair(record):
        return formats.as_pair(record, source, position)
    if not is_text(record.get("prompt")) or not is_text(formats.target_text(record, TARGET_FIELDS)):
        raise RecordError(source, position, f"an SFT record needs 'prompt' and one of {', '.join(TARGET_FIELDS)} as text, or 'messages'")
    return record


def sft_examples(
    source: str | Path | inputs.DataSpec,
    tokenizer,
    max_length: int,
    limit: int | None = None,
    cache: Path | None | str = "default",
) -> list[EncodedPair]:
    """Encode (prompt, target) examples from a built-in dataset or any source of :mod:`dpo3d.data.inputs`
    (see :func:`sft_record`), through the encoding cache (None disables it); with ``limit``, only the first
    ``limit`` records are read."""
    if str(source) in BUILTINS:
        records, name = load_prompts(str(source), limit=limit), str(source)
    else:
        opened = inputs.open_source(source)
        records, name = list(itertools.islice(inputs.stream(opened, sft_record, ids=True), limit)), opened.name
    items = [(record["prompt"], formats.target_text(record, TARGET_FIELDS)) for record in records]
    examples, _ = encode_cached(tokenizer, items, max_length, default_cache() if cache == "default" else cache)
    for record, pair in zip(records, examples, strict=True):
        if not pair.response_ids:
            raise RecordError(name, None, f"record '{record['id']}': the response is empty after truncation (raise --max-length)")
    return examples


@dataclass
class SFTTask(Task):
    examples: list[EncodedPair]
    pad_id: int
    eval_examples: list[EncodedPair] | None = None
    eval_every: int = 0
    padding_side: str = "right"
    total_steps: int = 0  # set by the loop: the last step is always evaluated
    logprob_options: LogprobOptions = field(default_factory=LogprobOptions)  # chunked LM head, packing

    def lengths(self) -> list[int]:
        return [len(example) for example in self.examples]

    def loss(self, model, indices: list[int]):
        device = next(model.parameters()).device
        batch = collate([self.examples[i] for i in indices], self.pad_id, self.padding_side).to(device)
        logps = sequence_logps(model, batch, self.logprob_options)
        nll = -logps.mean
        return nll.mean(), {"loss": nll, "response_logp": logps.sum, "response_tokens": logps.count}

    def probe(self, model, step: int, indices: list[int]) -> dict[str, float]:
        if not self.eval_examples or not (step in (0, self.total_steps) or (self.eval_every and step % self.eval_every == 0)):
            return {}
        with torch.no_grad():
            logps = score_sequences(model, self.eval_examples, self.pad_id, 16, self.padding_side, self.logprob_options)
        return {"eval_loss": float((-logps.mean).mean())}

    def check(self, record: dict) -> list[str]:
        return []


@dataclass
class SFTRunConfig:
    model: str
    data: str | inputs.DataSpec
    loop: LoopConfig
    eval_data: str | inputs.DataSpec | None = None
    eval_every: int = option(10, "Evaluate the held-out data every N steps (and the first and last).", min=0)
    max_length: int = 1024
    limit: int | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # r = 0: full fine-tuning


def train_sft(config: SFTRunConfig, callbacks: LoopCallbacks | None = None, on_status=lambda message: None) -> RunResult:
    on_status(f"loading {config.model}")
    tokenizer = load_tokenizer(config.model, config.load)
    model = lora.for_training(load_causal_lm(config.model, config.load), config.lora, config.model, seed=config.loop.seed)
    on_status(lora.trainable_summary(model).message())
    on_status("encoding data")
    examples = sft_examples(config.data, tokenizer, config.max_length, config.limit)
    eval_examples = sft_examples(config.eval_data, tokenizer, config.max_length) if config.eval_data else None
    config.loop.extra = {"task": "sft", "model": config.model, "data": str(config.data), "examples": len(examples),
                         **inputs.DataSpec.of(config.data).options(),
                         "eval_data": str(config.eval_data) if config.eval_data else None, "max_length": config.max_length, "lora": config.lora.to_json()}
    task = SFTTask(examples, tokenizer.pad_token_id, eval_examples, config.eval_every, config.load.padding_side)
    on_status("training")
    result = train(model, tokenizer, task, config.loop, callbacks)
    if config.lora.merge and is_main_process():
        on_status(f"merged model → {lora.save_merged(model, tokenizer, Path(config.loop.out) / lora.MERGED_FOLDER)}")
    return result
