"""`train-dpo`: prepare the reference log-probs and the task, then run the shared loop."""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path

from ..losses import get_loss
from ..models import LoadOptions, load_causal_lm, load_tokenizer
from ..records import read_log, write_json
from . import reference as ref_cache
from .config import LoopConfig, is_main_process
from .dpo_task import DPOSettings, DPOTask
from .loop import LoopCallbacks, RunResult, train
from .pairs_data import load_pairs, probe_indices


@dataclass
class DPORunConfig:
    model: str
    pairs: Path
    loop: LoopConfig
    loss: str = "dpo"
    hyperparameters: dict = field(default_factory=dict)
    ref: str | None = None  # None: the starting policy
    eval_pairs: Path | None = None
    max_length: int = 1024
    probe_size: int = 16
    unseen_limit: int = 64
    grad_split_every: int = 0
    eval_every: int = 0
    load: LoadOptions = field(default_factory=LoadOptions)


def _reference_logps(config: DPORunConfig, policy, tokenizer, groups) -> dict:
    """Cached if the fingerprint matches; else computed (with --ref, or the starting policy) and stored."""
    reference_name = config.ref or config.model
    key = ref_cache.fingerprint(reference_name, groups)
    found = ref_cache.cached(config.loop.out, key)
    if found is not None:
        return found
    if config.ref is None or config.ref == config.model:
        tensors = ref_cache.compute(policy, groups, tokenizer.pad_token_id, config.loop.batch_size * 2)
    else:
        reference = load_causal_lm(config.ref, config.load).to(next(policy.parameters()).device)
        tensors = ref_cache.compute(reference, groups, tokenizer.pad_token_id, config.loop.batch_size * 2)
        del reference  # the reference model is not kept in memory during training
        gc.collect()
    if is_main_process():
        ref_cache.store(config.loop.out, key, tensors)
    return tensors


def train_dpo(config: DPORunConfig, callbacks: LoopCallbacks | None = None, on_status=lambda message: None) -> RunResult:
    spec = get_loss(config.loss)
    hyper = spec.select(config.hyperparameters)
    on_status(f"loading {config.model}")
    tokenizer = load_tokenizer(config.model, config.load)
    policy = load_causal_lm(config.model, config.load)
    on_status("encoding pairs")
    pairs = load_pairs(config.pairs, tokenizer, config.max_length, config.unseen_limit, config.loop.seed)
    eval_pairs = load_pairs(config.eval_pairs, tokenizer, config.max_length, 0) if config.eval_pairs else None
    groups = {"chosen": pairs.chosen, "rejected": pairs.rejected, "unseen": pairs.unseen}
    if eval_pairs is not None:
        groups.update({"eval_chosen": eval_pairs.chosen, "eval_rejected": eval_pairs.rejected})
    on_status("reference log-probs (once, cached beside the run)")
    # reference-free losses (simpo, slic) ignore it, but the diagnostics still measure change from it
    reference = _reference_logps(config, policy, tokenizer, groups)
    baseline = None
    if config.loop.resume:
        first = next((r for r in read_log(Path(config.loop.out) / "metrics.jsonl") if r.get("step") == 0), None)
        baseline = {k: v for k, v in (first or {}).items() if k.startswith("probe_") and not k.endswith("_delta")} or None
    settings = DPOSettings(
        hyperparameters=hyper,
        probe_size=config.probe_size,
        grad_split_every=config.grad_split_every,
        eval_every=config.eval_every,
        score_batch_size=config.loop.batch_size * 2,
        padding_side=config.load.padding_side,
    )
    task = DPOTask(
        loss_spec=spec,
        pairs=pairs,
        reference=reference,
        settings=settings,
        pad_id=tokenizer.pad_token_id,
        probe_set=probe_indices(len(pairs), config.probe_size, config.loop.seed),
        eval_pairs=eval_pairs,
        baseline=baseline,
    )
    config.loop.extra = {
        "task": "dpo", "model": config.model, "ref": config.ref or config.model, "pairs": str(config.pairs),
        "eval_pairs": str(config.eval_pairs) if config.eval_pairs else None, "loss": spec.name,
        "loss_source": spec.source, "log_probs": spec.log_probs, "hyperparameters": hyper,
        "max_length": config.max_length, "probe_size": config.probe_size, "unseen_candidates": len(pairs.unseen),
        "grad_split_every": config.grad_split_every, "eval_every": config.eval_every,
    }
    on_status("training")
    result = train(policy, tokenizer, task, config.loop, callbacks)
    if is_main_process():
        write_json({"three_d_events": task.detector.events, "final": result.last_record}, Path(config.loop.out) / "summary.json")
    return result
