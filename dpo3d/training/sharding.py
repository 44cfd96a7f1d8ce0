"""What the training loops do differently when the parameters are sharded (FSDP, DeepSpeed).

Under DDP (and one process) every process holds the whole model: the probes run on the main
process alone, on the unwrapped model, and the main process saves its weights and optimizer
state. Under FSDP (and DeepSpeed ZeRO-3) each process holds a shard: a forward needs every
process, so every process runs the same probe through the prepared model (only the main process
logs it), and saving first gathers a full state dict, a collective every process calls, that the
main process writes. Checkpoints keep one format: the model as a Hugging Face folder and the
optimizer's full state (under FSDP keyed by parameter name) in ``trainer_state.pt``.

DeepSpeed takes over gradient accumulation and clipping: the loop gives it the micro-batch size,
the accumulation steps and the clipping norm before ``prepare`` and lets accelerate's
``accumulate`` mark the last micro-batch.
"""

from __future__ import annotations

import os

import torch
from accelerate.utils import DistributedType, broadcast_object_list, parse_flag_from_env

from dpo3d.scoring import features


def is_fsdp(accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.FSDP


def is_deepspeed(accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def shards_parameters(accelerator) -> bool:
    """Whether no single process holds the whole model: FSDP, or DeepSpeed ZeRO-3."""
    if is_fsdp(accelerator):
        return True
    return is_deepspeed(accelerator) and accelerator.state.deepspeed_plugin.zero_stage == 3


def on_every_process(accelerator, flags: list[bool]) -> list[bool]:
    """Per flag: true on every process (a collective: every process calls it)."""
    if not flags:
        return []
    counts = accelerator.reduce(torch.tensor([float(f) for f in flags], device=accelerator.device), "sum")
    return [int(round(float(c))) == accelerator.num_processes for c in counts]


def settle_scoring(accelerator, model, task) -> None:
    """Every process probes the task's scorer features (chunked head, packing) through the prepared model,
    together, and keeps the common verdict (:func:`dpo3d.scoring.features.settle_support`): no scoring call probes
    later, on one process and not the others, in the middle of a sharded forward."""
    options = task.logprob_options
    if options is None:  # a task that scores no tokens (reward models)
        return
    with accelerator.autocast():  # the verdict for the precision the run trains in
        features.settle_support(model, options, accelerator.device, agree=lambda flags: on_every_process(accelerator, flags))


def gathers_to_save(accelerator) -> bool:
    """Whether the weights to save come from ``accelerator.get_state_dict`` (every process calls it)."""
    return is_fsdp(accelerator) or is_deepspeed(accelerator)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        return default


def _has_accelerator() -> bool:
    """Whether this machine has a device accelerate launches processes on (a CUDA GPU, or another torch accelerator)."""
    if torch.cuda.is_available():
        return True
    try:
        return bool(getattr(torch, "accelerator", None) and torch.accelerator.is_available())
    except RuntimeError:  # some torch builds raise where no accelerator is present
        return False


#: what to do when a launch's processes would each train alone on a machine without GPUs
_CPU_FIX = "add --device cpu to train on the CPU with the same launch, or launch where the GPUs are"


def check_devices(cpu: bool) -> None:
    """Refuse, before anything is loaded or written, a launch this machine cannot run: processes started
    for GPUs (``accelerate launch`` with a GPU config) on a machine without any, which never join one
    process group and would each train alone on the same folder; or more processes on this machine than it
    has GPUs. ``cpu``: the run was asked to train on the CPU (``--device cpu``), where any number fit."""
    if cpu or parse_flag_from_env("ACCELERATE_USE_CPU"):
        return
    world, local = _env_int("WORLD_SIZE", 1), _env_int("LOCAL_WORLD_SIZE", 0)
    if world <= 1 and local <= 1:
        return
    if not _has_accelerator():
        raise ValueError(f"the launcher started {world} processes (WORLD_SIZE={world}) to train on GPUs, and this machine "
                         f"has none: each process would train alone on the same folder; {_CPU_FIX}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else None
    if count is not None and local > count:
        raise ValueError(f"the launcher started {local} processes on this machine (LOCAL_WORLD_SIZE={local}), one per GPU, "
                         f"and it has {count}: launch with --num_processes {count} (or set num_processes to {count} in the "
                         "accelerate config), or add --device cpu")


def check_launch(accelerator) -> None:
    """Refuse, on every process, a launch whose processes did not join one process group (each would train
    as a one-process run and write the same folder), and one that asked for FSDP or DeepSpeed but did not
    get it (accelerate falls back silently)."""
    world = _env_int("WORLD_SIZE", 1)
    if world > 1 and accelerator.num_processes != world:
        got = f"accelerate set up {accelerator.num_processes} process(es) ({accelerator.distributed_type.value})"
        if accelerator.device.type == "cpu" and not _has_accelerator():
            cause = f"the launch config asks for GPUs and this machine has none; {_CPU_FIX}"
        else:
            cause = ("check the launch: its config (accelerate launch --config_file) and that every process reaches "
                     "MASTER_ADDR:MASTER_PORT")
        raise ValueError(f"the launcher started {world} processes (WORLD_SIZE={world}) but they did not join one process "
                         f"group: {got}, so each would train alone on the same folder. {cause}")
    for variable, kind, name in (("ACCELERATE_USE_FSDP", DistributedType.FSDP, "FSDP"),
                                 ("ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED, "DeepSpeed")):
        if os.environ.get(variable, "false").lower() == "true" and accelerator.distributed_type != kind:
            raise ValueError(
                f"the launcher asked for {name}, but accelerate set up {accelerator.distributed_type.value}: accelerate "
                f"runs {name} only on GPUs (or other accelerators), not with --device cpu or on a machine without them. "
                "Use the DDP config (configs/accelerate/ddp.yaml) there."
            )


def check_supported(accelerator, save_every: int, resume: bool, probe_gradients: bool = False,
                    adapter: bool = False, whole_weights: bool = False, compiled: bool = False) -> None:
    """Refuse what the loop cannot do under this distributed type, before any training.

    ``probe_gradients``: the task's probes differentiate with respect to the parameters (DPO's
    --grad-split-every), which sharded parameters do not allow: FSDP2 computes through gathered copies,
    so ``torch.autograd.grad`` on the sharded parameters finds none of them in the graph. ``whole_weights``:
    the task reads the policy's whole weights after each update and checkpoints a model of its own (DPO's
    synced reference). ``compiled``: --compile, whose layers would be wrapped by FSDP/DeepSpeed after compiling."""
    if compiled and (is_fsdp(accelerator) or is_deepspeed(accelerator)):
        raise ValueError("--compile is untried under FSDP and DeepSpeed (they wrap and shard the layers it compiled): "
                         "leave it off there, or use DDP (configs/accelerate/ddp.yaml)")
    if adapter and is_fsdp(accelerator):
        raise ValueError("LoRA (--lora-r) with FSDP is not supported: --merge folds the adapter into the model after "
                         "training, on one process, which FSDP leaves sharded across all of them. A LoRA model is "
                         "small enough for DDP (configs/accelerate/ddp.yaml)")
    if is_deepspeed(accelerator) and (save_every or resume):
        raise ValueError("checkpoints for --resume are not supported under DeepSpeed (its optimizer state is "
                         "partitioned across processes and these trainers save it from the main process): "
                         "use --save-every 0, or FSDP / DDP for resumable runs")
    if whole_weights and (shards_parameters(accelerator) or is_deepspeed(accelerator)):
        raise ValueError("--ref-sync reads the policy's whole weights on each process and checkpoints the reference "
                         "beside it, which FSDP and DeepSpeed do not allow: use DDP (configs/accelerate/ddp.yaml)")
    if probe_gradients and shards_parameters(accelerator):
        raise ValueError("--grad-split-every needs the whole parameters on one process, which FSDP and DeepSpeed "
                         "ZeRO-3 shard: use --grad-split-every 0 there, or DDP")


def check_ppo_supported(accelerator) -> None:
    """PPO runs under DDP only: it prepares two models (policy, value) with one optimizer, which accelerate's
    FSDP2 and DeepSpeed refuse, and it samples from the unwrapped policy on each process alone."""
    if is_fsdp(accelerator) or is_deepspeed(accelerator):
        raise ValueError(f"ppo does not run under {accelerator.distributed_type.value}: it trains a policy and a value "
                         "model with one optimizer (accelerate's FSDP2 and DeepSpeed take one model) and each process "
                         "samples on its own; launch it with DDP (configs/accelerate/ddp.yaml)")


class ProbeRunner:
    """Who runs the probes and evaluations, and on which model.

    ``everywhere``: every process computes the same probe (sharded parameters); otherwise the main
    process alone, on the unwrapped model, as under DDP.
    """

    def __init__(self, accelerator, prepared):
        self.accelerator = accelerator
        self.everywhere = shards_parameters(accelerator)
        self.model = prepared if self.everywhere else accelerator.unwrap_model(prepared)

    @property
    def runs_here(self) -> bool:
        return self.everywhere or self.accelerator.is_main_process

    def same_indices(self, indices: list[int]) -> list[int]:
        """The main process's indices on every process (a sharded probe must see the same examples)."""
        if not self.everywhere:
            return indices
        box = [list(indices)]
        broadcast_object_list(box, from_process=0)
        return box[0]


def full_state_dict(accelerator, prepared) -> dict | None:
    """The whole model's weights for saving, gathered by accelerate (call on every process); None when the
    unwrapped model's own ``save_pretrained`` already sees them whole (DDP, one process)."""
    if not gathers_to_save(accelerator):
        return None
    weights = accelerator.get_state_dict(prepared)
    copies = tied_copies(accelerator.unwrap_model(prepared))
    return {name: tensor for name, tensor in weights.items() if name not in copies}


def tied_copies(model) -> set[str]:
    """Names of parameters that are another parameter (tied embeddings), the first name of each kept.

    Gathering copies each name's tensor, so ``save_pretrained`` no longer sees the shared storage by which it
    writes a tied weight once; dropping the copies writes what one process writes."""
    seen: set[int] = set()
    copies = set()
    for name, parameter in model.named_parameters(remove_duplicate=False):
        if id(parameter) in seen:
            copies.add(name)
        seen.add(id(parameter))
    return copies


def optimizer_state(accelerator, prepared, optimizer) -> dict:
    """The optimizer state to checkpoint (call on every process; the main process's is the whole one).

    FSDP: the full state keyed by parameter name (torch.distributed.checkpoint, as accelerate's own
    FSDP2 checkpointing does); otherwise the optimizer's own state dict.
    """
    if not is_fsdp(accelerator):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(prepared, _inner(optimizer), options=options)


def load_optimizer_state(accelerator, prepared, optimizer, state: dict) -> None:
    """Put a checkpoint's optimizer state back (every process read the whole checkpoint)."""
    if not is_fsdp(accelerator):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(prepared, _inner(optimizer), state, options=StateDictOptions(full_state_dict=True))


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper around the torch optimizer


def configure_deepspeed(accelerator, micro_batch: int, grad_accum: int, max_grad_norm: float | None) -> None:
    """DeepSpeed's micro-batch, accumulation and clipping from the loop's config, before ``prepare``.

    Accelerate cannot infer the micro-batch without a DataLoader (the loop builds its own batches), and
    DeepSpeed scales the loss by its accumulation steps and steps the optimizer itself at the boundary.
    """
    if not is_deepspeed(accelerator):
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch
    config["gradient_accumulation_steps"] = grad_accum
    config["train_batch_size"] = micro_batch * grad_accum * accelerator.num_processes
    config["gradient_clipping"] = float(max_grad_norm or 0.0)  # 0: DeepSpeed does not clip
    accelerator.gradient_accumulation_steps = grad_accum


def gradient_norm(accelerator, model, max_grad_norm: float | None) -> torch.Tensor | float:
    """Clip (if asked) and return the global gradient norm, before the optimizer step."""
    if is_deepspeed(accelerator):  # DeepSpeed clipped inside its step; it reports the norm it saw
        norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm or 0.0)
        return float("nan") if norm is None else norm
    if max_grad_norm:
        return accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    if is_fsdp(accelerator):  # sharded gradients: accelerate's norm over every shard, scaling them by 1
        return accelerator.clip_grad_norm_(model.parameters(), float("inf"))
    accelerator.unscale_gradients()  # fp16's loss scaling: measure the true gradient
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
