"""`train-dpo`: prepare the reference log-probs and the task, then run the shared loop."""

from __future__ import annotations

import copy
import gc
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dpo3d.config.fields import option
from dpo3d.data import inputs
from dpo3d.data.records import RecordError, write_json
from dpo3d.data.run_log import read_log
from dpo3d.models import host_memory, lora
from dpo3d.models.loading import LoadOptions, load_causal_lm, load_tokenizer
from dpo3d.models.lora import LoRAConfig
from dpo3d.pairs.pair_set import KEEP_IDENTICAL_HELP, load_pairs
from dpo3d.scoring.forward import LogprobOptions
from dpo3d.scoring.pair_logps import truncate_to_shared

from ..losses import BoundLoss, bind_loss
from ..losses.mixture import parse_mixture
from ..watch.guard import KEEP_BEST_HELP, GuardSettings, guard_help
from ..watch.probe_responses import ProbeResponseConfig, probe_responses
from ..watch.probes import baseline_of, probe_indices, probe_prompts
from ..watch.run import RunWatch
from . import checkpoint, precision, ref_sync
from . import reference as ref_cache
from .config import LoopConfig, is_main_process
from .dpo_task import DPOSettings, DPOTask
from .loop import train
from .ref_sync import ALPHA_HELP, EVERY_HELP, SYNC_HELP
from .run_folder import LoopCallbacks, RunResult, stage


@dataclass
class DPORunConfig:
    """A train-dpo run: model, pairs, the shared loop's section, the loss (bound once, where the run
    starts), LoRA, the probes and guard, and how log-probs are computed; each setting's default and
    help stated here (or in its section's dataclass) and nowhere else."""

    model: str
    pairs: str | Path | inputs.DataSpec
    loop: LoopConfig
    limit: int | None = None  # read only the first N pairs
    loss: BoundLoss = field(default_factory=lambda: bind_loss("dpo"))  # bound once, where the run starts
    ref: str | None = option(None, "Reference model (default: the same start as --model).")
    ref_sync: str | None = option(None, SYNC_HELP)  # soft | hard (TR-DPO); None: a fixed reference
    ref_sync_alpha: float = option(0.6, ALPHA_HELP)
    ref_sync_every: int = option(32, EVERY_HELP, min=1)
    eval_pairs: str | Path | inputs.DataSpec | None = None
    max_length: int = 1024
    probe_size: int = option(16, "Fixed training pairs whose log-probs are tracked each logged step.", min=1)
    probe_pairs: str | Path | inputs.DataSpec | None = option(
        None, "Probe these pairs (any pair source, same --columns/--subset; their `unseen` candidates too) instead "
        "of --probe-size training pairs: one probe set for runs on different data (dpo3d iterate's rounds).",
        cli_type=str)
    unseen_limit: int = option(
        64, "Unseen candidates (the pairs' `unseen` field) tracked for dispersion.", flags=("--unseen",), min=0)
    grad_split_every: int = option(
        0, "Every N steps, measure the parameter-gradient norm from the chosen and the rejected side (2 extra "
        "backward passes).", min=0)
    eval_every: int = option(10, "Evaluate the held-out pairs every N steps (and the first and last).", min=0)
    keep_identical: bool = option(False, KEEP_IDENTICAL_HELP, flags=("--keep-identical/--drop-identical",))
    load: LoadOptions = field(default_factory=LoadOptions)
    lora: LoRAConfig = field(default_factory=LoRAConfig)  # r = 0: full fine-tuning
    probe_responses: ProbeResponseConfig = field(default_factory=ProbeResponseConfig)  # the squeezing probes
    logprobs: LogprobOptions = field(default_factory=LogprobOptions)  # how log-probs are computed (chunked head, packing)
    guard: str | None = option(None, guard_help())  # sft | flex | stop: act on the detector's warnings; None: only warn
    keep_best: str | None = option(None, KEEP_BEST_HELP)  # "chosen": keep OUT/best, where the probe chosen peaked
    guard_settings: GuardSettings = field(default_factory=GuardSettings)


#: losses that score a pair's two sides apart: the only ones that may read unpaired examples set side by side
READS_UNPAIRED = frozenset({"kto", "sft"})


def check_unpaired(loss: BoundLoss, pairs, source) -> None:
    """Refuse unpaired {prompt, completion, label} examples for a loss that compares a pair's two
    responses to one prompt (dpo would compare answers to two different prompts)."""
    parts = {name for name, _ in parse_mixture(loss.name)}
    if any("unpaired" in record for record in pairs.records) and not parts <= READS_UNPAIRED:
        raise RecordError(str(source), None, f"unpaired {{prompt, completion, label}} examples: --loss {loss.name} "
                          "compares a pair's two answers to one prompt; use kto (alone or mixed with sft)")


def _reference_logps(config: DPORunConfig, policy, tokenizer, groups, moving=None) -> dict:
    """Cached if the fingerprint matches; else computed (with --ref, or the starting policy) and stored.
    ``moving``: the synced reference model, at its start (scored instead of loading --ref again)."""
    reference_name = config.ref or config.model
    # the reference is scored under the autocast training uses, so policy and reference agree at step 0
    mixed = precision.resolve(config.loop.mixed_precision)
    key = ref_cache.fingerprint(reference_name if mixed == "no" else f"{reference_name} ({mixed} autocast)", groups)
    found = ref_cache.cached(config.loop.out, key)
    if found is not None:
        return found
    device = precision.run_device(config.loop.cpu)
    precision.check_device(mixed, device)
    policy.to(device)  # accelerate would place it there anyway; a GPU scores far faster than the host
    kept = host_memory.kept(config.loop.keep_host_memory and device.type == "cpu")
    with kept, precision.autocast(mixed, device):
        if moving is not None or config.ref is None or config.ref == config.model:
            tensors = ref_cache.compute(moving if moving is not None else policy, groups, tokenizer.pad_token_id,
                                        config.loop.batch_size * 2, options=config.logprobs)
        else:
            reference = load_causal_lm(config.ref, config.load).to(device)
            tensors = ref_cache.compute(reference, groups, tokenizer.pad_token_id, config.loop.batch_size * 2,
                                        options=config.logprobs)
            del reference  # a fixed reference model is not kept in memory during training
            gc.collect()
    if is_main_process():
        ref_cache.store(config.loop.out, key, tensors)
    return tensors


def _moving_reference(config: DPORunConfig, policy, tokenizer, groups) -> ref_sync.ReferenceSync:
    """--ref-sync's reference: a full-weight copy of the starting policy (before any adapter), or --ref
    loaded (it must share the policy's weights' names and shapes), on the run's device."""
    if config.ref is None or config.ref == config.model:
        model = copy.deepcopy(policy)
    else:
        model = load_causal_lm(config.ref, config.load)
        ref_sync.check_same_weights(model, policy, f"--ref {config.ref}")
    model.to(precision.run_device(config.loop.cpu))
    return ref_sync.ReferenceSync.start(model, config.ref_sync, config.ref_sync_alpha, config.ref_sync_every, groups,
                                        tokenizer.pad_token_id, config.loop.batch_size * 2, config.logprobs)


def guard_summary(watch: RunWatch, result: RunResult) -> dict:
    """summary.json's account of the guard and the best state (empty without either)."""
    summary: dict = {}
    if watch.guard is not None:
        loss = watch.current_loss
        summary["guard"] = {"policy": watch.guard.policy, "actions": watch.actions, "stopped_at": result.stopped_at,
                            "final_loss": loss.name, "final_hyperparameters": dict(loss.options)}
    if watch.best is not None:
        kept = "OUT (the run stopped) and OUT/best" if result.stopped_at is not None else "OUT/best"
        summary["best"] = {"metric": watch.best.key, "step": watch.best.step, "value": watch.best.value, "saved_in": kept}
    return summary


def train_dpo(config: DPORunConfig, callbacks: LoopCallbacks | None = None, on_status=lambda message: None) -> RunResult:
    loss = config.loss
    config.lora.validate()  # before the reference pass, not after it
    config.probe_responses.validate()
    ref_sync.validate(config.ref_sync, config.ref_sync_alpha, config.ref_sync_every)
    resuming = config.loop.resume and checkpoint.latest(config.loop.out) is not None  # a --resume may start over
    if resuming:
        ref_sync.check_resume(Path(config.loop.out) / "run_config.json",
                              ref_sync.settings(config.ref_sync, config.ref_sync_alpha, config.ref_sync_every))
    # the detector, the guard and the best-step tracker; a guard that cannot act on this loss fails here
    watch = RunWatch.start(loss, config.guard, config.keep_best, config.guard_settings)
    callbacks = callbacks or LoopCallbacks()
    on_status(f"loading {config.model}")
    with stage(callbacks, "loading the model"):
        tokenizer = load_tokenizer(config.model, config.load)
        policy = load_causal_lm(config.model, config.load)
    on_status("encoding pairs")
    with stage(callbacks, "encoding pairs"):
        pairs = load_pairs(config.pairs, tokenizer, config.max_length, config.unseen_limit, config.loop.seed,
                           limit=config.limit, keep_identical=config.keep_identical)
        eval_pairs = (load_pairs(config.eval_pairs, tokenizer, config.max_length, 0, keep_identical=config.keep_identical)
                      if config.eval_pairs else None)
    check_unpaired(loss, pairs, config.pairs)
    groups = {"chosen": pairs.chosen, "rejected": pairs.rejected, "unseen": pairs.unseen}
    if eval_pairs is not None:
        groups.update({"eval_chosen": eval_pairs.chosen, "eval_rejected": eval_pairs.rejected})
    if "shared" in loss.inputs:  # LD-DPO: the reference's log-probs over each pair's shared length too
        groups.update(zip(("chosen_shared", "rejected_shared"), truncate_to_shared(pairs.chosen, pairs.rejected), strict=True))
        if eval_pairs is not None:
            groups.update(zip(("eval_chosen_shared", "eval_rejected_shared"), truncate_to_shared(eval_pairs.chosen, eval_pairs.rejected), strict=True))
    probed = pairs
    if config.probe_pairs is not None:  # a probe set of its own: every pair of it, with its unseen candidates
        probed = load_pairs(config.probe_pairs, tokenizer, config.max_length, config.unseen_limit, config.loop.seed,
                            keep_identical=config.keep_identical)
        probe_set = list(range(len(probed)))
    else:
        probe_set = probe_indices(len(pairs), config.probe_size, config.loop.seed)
    # the squeezing probes, from the starting policy before any update (stored: a resumed run reuses them)
    prompts = probe_prompts(probed.chosen, probe_set)
    if config.probe_responses.enabled:
        on_status(f"the starting policy's greedy response and {config.probe_responses.samples} sample(s) "
                  f"for {len(prompts)} probe prompt(s)")
        policy.to(precision.run_device(config.loop.cpu))
    out = Path(config.loop.out)
    keeps = config.loop.resume or not (out / "metrics.jsonl").exists()  # else the loop refuses the folder: leave it be
    with stage(callbacks, "probe responses"):
        own = probe_responses(policy, tokenizer, prompts, config.probe_responses, config.loop.seed,
                              out, main=is_main_process() and keeps)
    sync = _moving_reference(config, policy, tokenizer, groups) if config.ref_sync else None
    on_status("reference log-probs (once, cached beside the run)" if sync is None else
              f"reference log-probs (cached beside the run; scored again at every {config.ref_sync} sync)")
    # reference-free losses (simpo, slic) ignore it, but the diagnostics still measure change from it
    with stage(callbacks, "reference log-probs"):
        reference = _reference_logps(config, policy, tokenizer, groups, sync.model if sync else None)
    # the adapter comes after the reference pass: the reference is the plain starting policy
    policy = lora.for_training(policy, config.lora, config.model, seed=config.loop.seed)
    on_status(lora.trainable_summary(policy).message())
    baseline = None
    if resuming:  # a --resume that starts over measures its own
        first = next((r for r in read_log(Path(config.loop.out) / "metrics.jsonl") if r.get("step") == 0), None)
        baseline = baseline_of(first or {}) or None
    settings = DPOSettings(
        probe_size=config.probe_size,
        grad_split_every=config.grad_split_every,
        eval_every=config.eval_every,
        score_batch_size=config.loop.batch_size * 2,
        padding_side=config.load.padding_side,
        logprobs=config.logprobs,
    )
    task = DPOTask(
        bound_loss=loss,
        pairs=pairs,
        reference=reference,
        settings=settings,
        pad_id=tokenizer.pad_token_id,
        probe_set=probe_set,
        probe_pairs=probed,
        eval_pairs=eval_pairs,
        baseline=baseline,
        probe_responses=own,
        watch=watch,
        sync=sync,
    )
    config.loop.extra = {
        "task": "dpo", "model": config.model, "ref": config.ref or config.model, "pairs": str(config.pairs),
        "ref_sync": sync.to_json() if sync else None,
        **inputs.DataSpec.of(config.pairs).options(), "limit": config.limit, "pairs_read": len(pairs),
        "pairs_identical_dropped": pairs.identical, "keep_identical": config.keep_identical,
        "eval_pairs": str(config.eval_pairs) if config.eval_pairs else None, "loss": loss.name,
        "loss_source": loss.spec.source, "log_probs": loss.spec.log_probs, "hyperparameters": dict(loss.options),
        "max_length": config.max_length, "probe_size": len(probe_set), "unseen_candidates": len(probed.unseen),
        "probe_pairs": str(config.probe_pairs) if config.probe_pairs is not None else None,
        "grad_split_every": config.grad_split_every, "eval_every": config.eval_every, "lora": config.lora.to_json(),
        "probe_responses": {**vars(config.probe_responses), **{name: len(v) for name, v in own.items()}},
        "logprobs": vars(config.logprobs),
        "guard": config.guard, "keep_best": config.keep_best or ("chosen" if config.guard == "stop" else None),
        **({"guard_settings": asdict(config.guard_settings)} if config.guard else {}),
    }
    on_status("training")
    result = train(policy, tokenizer, task, config.loop, callbacks)
    if is_main_process():
        synced = {"ref_synced_at": sync.steps(result.steps, task.total_steps)} if sync else {}
        write_json({"three_d_events": task.detector.events, **guard_summary(watch, result), **synced,
                    "final": result.last_record}, Path(config.loop.out) / "summary.json")
        if config.lora.merge:
            on_status(f"merged model → {lora.save_merged(policy, tokenizer, Path(config.loop.out) / lora.MERGED_FOLDER)}")
    return result
