"""Sampling N candidate completions per prompt, batched, with the KV cache.

Prompts are processed in fixed chunks of ``max(1, batch_size // n)`` prompts;
each chunk is sampled under its own seed, derived from the run's seed and the
chunk's index. So the same command gives the same candidates, and a run resumed
after a crash (which restarts at a chunk boundary) gives exactly the candidates
the uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import importlib.util
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from dpo3d.data.sequences import encode_prompt
from dpo3d.models.loading import (
    LoadOptions,
    dtype_name,
    full_model_folder,
    load_model_and_tokenizer,
    load_tokenizer,
    pick_device,
)


@dataclass(frozen=True)
class SamplingConfig:
    n: int = 8
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    batch_size: int = 32  # sequences generated together
    seed: int = 0

    @property
    def prompts_per_chunk(self) -> int:
        return max(1, self.batch_size // self.n)

    def validate(self) -> None:
        if self.n < 1:
            raise ValueError("-n must be at least 1")
        if self.temperature < 0:
            raise ValueError("--temperature must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError("--top-p must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError("--max-new-tokens must be at least 1")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.temperature == 0 and self.n > 1:
            raise ValueError("greedy decoding (--temperature 0) gives one candidate; use -n 1")


@dataclass
class ChunkResult:
    """The candidates of one chunk of prompts, and what it cost."""

    records: list[dict]
    prompts_done: int
    new_tokens: int
    seconds: float


def chunk_seed(seed: int, chunk_index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{chunk_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def chunks(prompts: Sequence[dict], config: SamplingConfig) -> list[tuple[int, list[dict]]]:
    """The fixed chunks ``(index, prompts)`` of a run: resume skips whole chunks by index."""
    size = config.prompts_per_chunk
    return [(i // size, list(prompts[i : i + size])) for i in range(0, len(prompts), size)]


def candidate_record(
    prompt_record: dict, completion: str, sample_index: int, source: str, tokens: int, finish_reason: str
) -> dict:
    """One candidate: the prompt record's fields, then the candidate's own.

    ``finish_reason`` is ``stop`` (the model ended its turn) or ``length`` (cut at
    ``max_new_tokens``): a cut math solution usually has no final answer yet.
    """
    return {
        **prompt_record,
        "completion": completion,
        "sample_index": sample_index,
        "source": source,
        "completion_tokens": tokens,
        "finish_reason": finish_reason,
    }


BACKENDS = ("hf", "vllm")


def check_backend(name: str) -> None:
    """Raise ValueError for an unknown backend, or for vLLM where it is not installed."""
    if name not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got '{name}'")
    if name == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ValueError("--backend vllm needs vLLM installed (pip install vllm, on a GPU machine); "
                         "the default --backend hf needs nothing more")


class HFSampler:
    """Hugging Face ``generate`` with left padding and the KV cache."""

    def __init__(self, model, tokenizer, config: SamplingConfig):
        config.validate()
        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def sample_chunk(self, chunk_index: int, prompts: list[dict], source: str) -> ChunkResult:
        start = time.perf_counter()
        cfg = self.config
        encoded = [encode_prompt(self.tokenizer, record["prompt"]) for record in prompts]
        torch.manual_seed(chunk_seed(cfg.seed, chunk_index))
        generated = generate_ids(self.model, self.tokenizer, encoded, cfg)
        records, new_tokens = [], 0
        for row, (tokens, stopped) in enumerate(generated):
            new_tokens += len(tokens)
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            prompt_record = prompts[row // cfg.n]
            finish = "stop" if stopped or len(tokens) < cfg.max_new_tokens else "length"
            records.append(candidate_record(prompt_record, text, row % cfg.n, source, len(tokens), finish))
        return ChunkResult(records, len(prompts), new_tokens, time.perf_counter() - start)


@torch.no_grad()
def generate_ids(model, tokenizer, encoded: Sequence[list[int]], cfg: SamplingConfig) -> list[tuple[list[int], bool]]:
    """``cfg.n`` continuations of each prompt (token ids, left-padded, KV cache), under the current torch seed.

    Returns, row by row (prompt 0's n samples first), the generated ids up to and
    including the first end-of-turn token, and whether the model ended its turn.
    """
    device = next(model.parameters()).device
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(ids)) + list(ids) for ids in encoded], device=device)
    attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in encoded], device=device)
    sampling = {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": 0} if cfg.temperature > 0 else {"do_sample": False}
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=cfg.max_new_tokens,
        num_return_sequences=cfg.n,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=True,
        **sampling,
    )
    results = []
    for tokens in output[:, width:]:
        length, stopped = _generated_length(tokens, tokenizer.eos_token_id, pad)
        results.append((tokens[:length].tolist(), stopped))
    return results


def _generated_length(tokens: torch.Tensor, eos_id: int | None, pad_id: int) -> tuple[int, bool]:
    """(tokens up to and including the first EOS, whether there was one); padding after it is not generated."""
    if eos_id is not None:
        hits = (tokens == eos_id).nonzero()
        if len(hits):
            return int(hits[0]) + 1, True
    if pad_id != eos_id:
        return int((tokens != pad_id).sum()), False
    return int(tokens.shape[0]), False


class VLLMSampler:
    """vLLM's engine, for clusters where it is installed (``--backend vllm``)."""

    def __init__(self, model_path: str, tokenizer, config: SamplingConfig, trust_remote_code: bool = False,
                 dtype: str = "float32"):
        check_backend("vllm")
        from vllm import LLM  # noqa: PLC0415 - optional dependency

        config.validate()
        self.config, self.tokenizer = config, tokenizer
        # the dtype the run resolved and records (vLLM's own default follows the model's config instead)
        self.engine = LLM(model=model_path, seed=config.seed, trust_remote_code=trust_remote_code, dtype=dtype)

    def sample_chunk(self, chunk_index: int, prompts: list[dict], source: str) -> ChunkResult:
        from vllm import SamplingParams, TokensPrompt  # noqa: PLC0415

        cfg = self.config
        start = time.perf_counter()
        params = SamplingParams(
            n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens,
            seed=chunk_seed(cfg.seed, chunk_index),
        )
        inputs = [TokensPrompt(prompt_token_ids=encode_prompt(self.tokenizer, r["prompt"])) for r in prompts]
        records, new_tokens = [], 0
        for prompt_record, result in zip(prompts, self.engine.generate(inputs, params, use_tqdm=False), strict=True):
            for index, out in enumerate(result.outputs):
                new_tokens += len(out.token_ids)
                finish = "length" if out.finish_reason == "length" else "stop"
                records.append(candidate_record(prompt_record, out.text, index, source, len(out.token_ids), finish))
        return ChunkResult(records, len(prompts), new_tokens, time.perf_counter() - start)


def sample_all(
    sampler, prompts: Sequence[dict], source: str, skip_chunks: set[int] = frozenset(),
    on_chunk: Callable[[ChunkResult], None] | None = None,
) -> Iterator[ChunkResult]:
    """Sample every chunk not in ``skip_chunks``, yielding each chunk's candidates as it finishes."""
    for index, chunk in chunks(prompts, sampler.config):
        if index in skip_chunks:
            continue
        result = sampler.sample_chunk(index, chunk, source)
        if on_chunk is not None:
            on_chunk(result)
        yield result


def load_sampler(backend: str, model: str, config: SamplingConfig, load: LoadOptions, device: str = "auto"):
    """A sampler of ``model`` (a folder, hub id or the bundled name) with ``config``: the 🤗 backend
    on ``device``, or vLLM on a full model folder (an adapter run is merged first). ``load`` should
    pad on the left, as generation needs."""
    check_backend(backend)
    if backend == "vllm":
        return VLLMSampler(full_model_folder(model, load), load_tokenizer(model, load), config,
                           trust_remote_code=load.trust_remote_code, dtype=dtype_name(load.dtype))
    lm, tokenizer = load_model_and_tokenizer(model, load)
    lm.to(pick_device(device))
    return HFSampler(lm, tokenizer, config)
