"""dpo3d's 3D watch inside a TRL ``DPOTrainer`` (or any 🤗 ``Trainer``): probes, detector and guard as a callback.

::

    from trl import DPOConfig, DPOTrainer
    from dpo3d.integrations.trl import ThreeDCallback

    trainer = DPOTrainer(model=model, args=DPOConfig(...), train_dataset=train, processing_class=tokenizer)
    ThreeDCallback("pairs.jsonl", every=10, guard="sft").attach(trainer)
    trainer.train()

What it does, on every process (each runs the probe forwards; rank 0's scores are broadcast, so every rank
takes the same decisions):

* at train start it encodes the probe pairs with the trainer's tokenizer (``dpo3d.pairs.pair_set``, the same
  encoding train-dpo uses), generates the starting policy's greedy response to each probe prompt (the
  squeezing probe, a response in no pair) and scores everything once (``dpo3d.watch.probes``): the step-0
  record, with the rounding noise floor the detector needs (written to ``OUT/metrics.jsonl``; the trainer logs
  nothing at step 0). Changes are taken from the policy's own step-0 scores, as train-dpo's are; TRL's
  reference model is not scored (TRL logs the rewards against it);
* every ``every`` optimizer steps (and at the last) it scores them again under the current weights and
  feeds the record to the detector (``dpo3d.watch.detector``) and the guard (``dpo3d.watch.guard``);
* the record's fields reach the trainer's own log as ``3d/<field>``, so every tracker the trainer reports
  to (TensorBoard, W&B, Trackio, ``trainer.state.log_history``) receives them: ``attach`` puts the callback
  first in the trainer's callback list, because 🤗 calls callbacks in order and a callback given through
  ``callbacks=[...]`` runs its ``on_log`` after the trackers have already written the step. On a probe step
  it asks the trainer to log (``control.should_log``) and adds its fields to that log;
* warnings go to the ``dpo3d`` logger and stderr; every record and the events go to ``OUT/metrics.jsonl``
  and ``OUT/summary.json`` (``OUT`` = ``<output_dir>/3d``), which ``dpo3d diagnose OUT`` reads like a
  train-dpo run folder;
* the guard acts through TRL's own knobs: ``stop`` sets ``control.should_training_stop``; ``sft`` adds
  TRL's ``"sft"`` loss type (``trainer.loss_types``/``loss_weights``, TRL ≥ 1.0) with the guard's α, raised
  on later warnings as train-dpo's guard does, from the weight of an ``"sft"`` term the config already has. TRL's sft term averages the NLL over the batch's chosen
  tokens where dpo3d's ``dpo-sft`` averages per pair, so the two differ by that weighting only.
  ``flex`` is refused: TRL's ``DPOTrainer`` has one β for both sides and no β_l. ``stop`` names the step where
  the probe chosen log-prob peaked (``keep_step`` in the action); keeping that state is up to TRL's checkpoints;
* resume (``trainer.train(resume_from_checkpoint=...)``): the records up to the checkpoint's step are read
  back from ``OUT/metrics.jsonl`` and replayed, so the baseline, the detector's episodes and the guard's
  actions (an added sft term included) are what they were.

Tested with TRL 1.16.0 and transformers 5.25 (``tests/test_trl_callback.py``: one process, and DDP with two
processes; sharded models, FSDP or ZeRO-3, are not tested yet). The probes run under the trainer's autocast.
Nothing here imports TRL: the callback needs only ``transformers``; the sft guard needs TRL's ``loss_types``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from dpo3d.data.records import write_json
from dpo3d.data.run_log import AppendLog, read_log
from dpo3d.scoring.features import settle_support

from ..losses.bound import bind_loss
from ..losses.mixture import canonical_name
from ..watch.detector import DetectorSettings
from ..watch.guard import GuardSettings
from ..watch.probe_responses import FILE, generate, load, store
from ..watch.probes import ProbeOptions, ProbeScorer, baseline_of, probe_sets, select
from ..watch.run import RunWatch

logger = logging.getLogger("dpo3d")

PREFIX = "3d/"  # the log keys' prefix: one section in TensorBoard and W&B
FOLDER = "3d"  # under the trainer's output_dir
GUARDS = ("sft", "stop")


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def _from_main(value):
    """Rank 0's ``value`` on every rank: one set of decisions for the whole run (on a GPU, ranks' own probe scores
    can differ by rounding, and a rank that stops or changes its loss alone would hang or split the run)."""
    if not _distributed():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    if _distributed():
        torch.distributed.barrier()


def _tokenizer(processing_class):
    """The text tokenizer of a trainer's processing class (a processor wraps one)."""
    return getattr(processing_class, "tokenizer", processing_class)


class ThreeDCallback(TrainerCallback):
    """The 3D probes, detector and guard of dpo3d in another trainer (see the module docstring).

    ``probe_pairs``: preference pairs in any TRL format, from any source dpo3d reads (a JSONL path, a
    built-in or hub dataset spec); ``probe_size`` of them (seeded) are measured. ``every``: optimizer steps
    between probes. ``guard``: None (warn only), ``"stop"`` or ``"sft"``. ``greedy_tokens``: the length of the
    starting policy's greedy response per probe prompt (0: no squeezing probe). ``beta``: the β the guard
    reads (default: the trainer's ``args.beta``, else 0.1).
    """

    def __init__(
        self,
        probe_pairs: Any,
        *,
        every: int = 10,
        guard: str | None = None,
        probe_size: int = ProbeOptions.probe_size,
        max_length: int = ProbeOptions.max_length,
        unseen: int = ProbeOptions.unseen,
        greedy_tokens: int = ProbeOptions.greedy_tokens,
        batch_size: int = ProbeOptions.batch_size,
        seed: int = ProbeOptions.seed,
        beta: float | None = None,
        detector: DetectorSettings | None = None,
        guard_settings: GuardSettings | None = None,
        out: str | Path | None = None,
    ):
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, not {every}")
        if guard is not None and guard not in GUARDS:
            raise ValueError(f"guard '{guard}': choose from {', '.join(GUARDS)} (flex needs a separate β for the "
                             f"rejected side, which TRL's DPOTrainer does not have)")
        self.probe_pairs, self.every, self.guard, self.beta = probe_pairs, every, guard, beta
        # what is probed, as diagnose --pairs probes it (dpo3d.watch.probes.ProbeOptions)
        self.options = ProbeOptions(probe_size=probe_size, seed=seed, max_length=max_length, unseen=unseen,
                                    greedy_tokens=greedy_tokens, batch_size=batch_size)
        self.detector_settings, self.guard_settings = detector or DetectorSettings(), guard_settings
        self.out = Path(out) if out is not None else None
        self.trainer = None
        self.scorer: ProbeScorer | None = None
        self.watch: RunWatch | None = None
        self.records: list[dict] = []
        self._pending: dict[str, float] = {}
        self._main = True
        self._dir = Path(FOLDER)  # set at train start: out, or <output_dir>/3d
        self.probe_seconds = 0.0  # wall time spent probing (the overhead on the run)

    # ------------------------------------------------------------------ setup

    def attach(self, trainer) -> ThreeDCallback:
        """Add the callback to ``trainer`` ahead of its trackers (so they receive its fields) and give the sft
        guard the trainer's loss; returns the callback."""
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        self.trainer = trainer
        if self.guard == "sft" and not hasattr(trainer, "loss_types"):
            raise ValueError("guard sft adds TRL's 'sft' loss type: it needs a trl.DPOTrainer (TRL >= 1.0)")
        return self

    def _folder(self, args) -> Path:
        return self.out if self.out is not None else Path(args.output_dir) / FOLDER

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if self.guard == "sft" and self.trainer is None:
            raise ValueError("guard sft changes the trainer's loss: add the callback with .attach(trainer)")
        tokenizer = _tokenizer(processing_class)
        if tokenizer is None:
            raise ValueError("ThreeDCallback needs the trainer's tokenizer (processing_class)")
        self._main = state.is_world_process_zero
        self.records, self._pending, self.probe_seconds = [], {}, 0.0  # a callback reused for another train()
        # the lazy scoring features (chunked head, packing) decided now, on every rank alike (settle_support)
        settle_support(model, agree=_from_main)
        pairs, indices, prompts = select(self.probe_pairs, tokenizer, self.options)
        folder = self._dir = self._folder(args)
        resuming = state.global_step > 0
        if self._main and not resuming:  # a new run: nothing of an earlier one in this folder is read back
            folder.mkdir(parents=True, exist_ok=True)
            for stale in ("metrics.jsonl", FILE):
                (folder / stale).unlink(missing_ok=True)
        responses, config, seed = {}, self.options.greedy, self.options.seed
        if config is not None:  # the starting policy's own response: where squeezed-off mass would go
            # stored beside the records: a resumed run probes the starting policy's responses, not its own
            if resuming:
                responses = load(folder, config, seed, prompts)
            else:  # every process generates (a sharded model needs each in the forward); rank 0's are kept
                responses = _from_main(generate(model, tokenizer, prompts, config, seed))
                if self._main:
                    store(folder, config, seed, responses)
            if responses is None:
                raise ValueError(f"resume at step {state.global_step}: {folder / FILE} has no probe responses of "
                                 f"the starting policy for these settings")
        probes = probe_sets(pairs.chosen, pairs.rejected, indices, pairs.unseen, responses)
        self.scorer = ProbeScorer(probes, tokenizer.pad_token_id, self.options.batch_size,
                                  tokenizer.padding_side or "right")
        beta = self.beta if self.beta is not None else float(getattr(args, "beta", 0.1))
        # the trainer's loss, bound once here: the guard's changes make new ones (and reach TRL through _act)
        self.watch = RunWatch.start(bind_loss(self._loss_name(), {"beta": beta}), self.guard, None, self.guard_settings,
                                    self.detector_settings)
        if self.trainer is None:
            logger.warning("ThreeDCallback was given through callbacks=[...]: the trainer's trackers run before it and "
                           "miss its fields (they still reach state.log_history and %s); use .attach(trainer)", folder)
        if resuming:  # the records up to the checkpoint, replayed
            self._resume(folder, state.global_step)
            return
        self._measure(model, 0)

    def _loss_name(self) -> str:
        """DPO, with the sft term the user's TRL config already has (the sft guard raises it from there)."""
        types = list(getattr(self.trainer, "loss_types", None) or [])
        if "sft" not in types:
            return "dpo"
        return canonical_name([("dpo", 1.0), ("sft", float(self.trainer.loss_weights[types.index("sft")]))])

    def _resume(self, folder: Path, step: int) -> None:
        path = folder / "metrics.jsonl"
        kept = [r for r in read_log(path) if r.get("step", 0) <= step] if path.is_file() else []
        if not kept or kept[0].get("step") != 0:
            raise ValueError(f"resume at step {step}: {path} has no step-0 probe record to take the changes from")
        self.scorer.baseline = baseline_of(kept[0])
        self.records = []
        for record in kept:
            self._read(record, replay=True)
        _barrier()  # every rank has read the file before rank 0 rewrites it
        if self._main:  # records past the checkpoint belong to a run that is being redone
            path.unlink()
            with AppendLog(path) as log:
                for record in self.records:
                    log.write(record)

    # ------------------------------------------------------------------ every `every` steps

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if self.watch is not None and self.watch.should_stop:  # a resumed run the guard had stopped
            control.should_training_stop = True
            return control
        if self.scorer is None or not (step % self.every == 0 or step >= state.max_steps):
            return control
        record = self._measure(model, step)
        self._pending = {f"{PREFIX}{key}": value for key, value in record.items()
                         if key != "step" and isinstance(value, (int, float))}
        self._pending[f"{PREFIX}events"] = len(self.watch.events)
        control.should_log = True
        if self.watch.should_stop:
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Add the last probe record's fields to this log (the trackers, after this callback, read ``logs``)."""
        if not self._pending or logs is None or "loss" not in logs:  # a train-step log, not the end-of-run summary
            return control
        logs.update(self._pending)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(self._pending)  # the trainer copied logs into its history before on_log
        self._pending = {}
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.watch is not None and self._main:
            summary = {"three_d_events": self.watch.events, "guard_actions": self.watch.actions,
                       "final": self.records[-1] if self.records else None}
            write_json(summary, self._dir / "summary.json")
        return control

    # ------------------------------------------------------------------ measuring and reading

    def _measure(self, model, step: int) -> dict:
        started = time.perf_counter()
        was_training = model.training
        model.eval()  # dropout off: the probes measure the weights, not a random mask
        # the trainer's autocast (bf16/fp16): the probes, and the noise floor they read, in the training precision
        precision = self.trainer.accelerator.autocast() if self.trainer is not None else contextlib.nullcontext()
        try:
            with precision:  # measure() runs without gradients
                values = self.scorer.measure(model, step)
        finally:
            model.train(was_training)
        self.probe_seconds += time.perf_counter() - started
        record = _from_main({"step": step, **values})  # every rank reads rank 0's record: one set of decisions
        self._read(record)
        if self._main:
            with AppendLog(self._dir / "metrics.jsonl") as log:
                log.write(record)
        return record

    def _read(self, record: dict, replay: bool = False) -> None:
        warnings, actions, _ = self.watch.read(record)
        if actions:
            record["guard_actions"] = [action.record() for action in actions]
        for action in actions:
            self._act(action.changes)
        self.records.append(record)
        if replay or not self._main:
            return
        for message in warnings + [action.message for action in actions]:
            logger.warning("3D warning %s", message)  # with no handler configured, Python prints it on stderr
            if logger.hasHandlers():  # handlers of the user's: they may write elsewhere, so stderr gets it too
                print(f"3D warning {message}", file=sys.stderr)

    def _act(self, changes: Mapping[str, tuple[Any, Any]]) -> None:
        """The guard's change, made with TRL's own knobs (stop is read in ``on_step_end``)."""
        if "sft_weight" not in changes or self.trainer is None:
            return
        weight = float(changes["sft_weight"][1])
        types, weights = list(self.trainer.loss_types), list(self.trainer.loss_weights)
        if "sft" in types:
            weights[types.index("sft")] = weight
        else:
            types.append("sft")
            weights.append(weight)
        self.trainer.loss_types, self.trainer.loss_weights = types, weights
