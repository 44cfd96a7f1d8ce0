"""LoRA through peft: its settings, a fresh adapter for training, what training will cost.

A LoRA run trains low-rank adapters ``W + (α/r)·B·A`` on the chosen linear layers
and leaves every base weight frozen; B starts at zero, so the adapted model
computes exactly what its base did until the first step. A run folder then holds
the adapter (``adapter_config.json`` + ``adapter_model.safetensors``), whose
``base_model_name_or_path`` is the ``--model`` spec the run started from (an
absolute path for a local folder, the cached folder for the bundled model); :mod:`dpo3d.models.loading` loads such a folder as
its base with the adapter merged in, so an adapter trained on another adapter
(DPO on an SFT adapter) stacks by merging, down to a full model.

Reward and value models keep their scalar head (``score``) out of the adapter
targets and fully trainable (peft's ``modules_to_save``): a fresh head cannot
learn through a low-rank update of zero-initialised weights.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dpo3d.config.fields import option
from dpo3d.models.loading import BUNDLED, bundled_folder, is_adapted, save_pretrained

ALL_LINEAR = "all-linear"  # peft: every linear layer except the output (LM) head
HEADS = ("score", "classifier")  # scalar heads of reward/value models: trained in full
MERGED_FOLDER = "merged"
_TASK_TYPES = {"causal": "CAUSAL_LM", "reward": "SEQ_CLS", "value": "TOKEN_CLS"}


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters (peft); commands offer every field as ``--lora-<name>`` (``--merge``)."""

    r: int = option(0, "LoRA rank: train low-rank adapters (peft) on a frozen base instead of every weight; OUT is "
                    "then an adapter folder that every --model loads. 0: full fine-tuning.", min=0)
    alpha: float = option(16.0, "LoRA α: the adapter's update is scaled by α / r.")
    # 0 keeps a step deterministic (N processes = 1 process, resume = uninterrupted) and PPO's ratio exact
    dropout: float = option(0.0, "Dropout on the adapter's input (0 keeps runs exactly reproducible across "
                            "processes and resumes).", min=0.0)
    targets: str = option(ALL_LINEAR, "Layers that get adapters: all-linear (every linear layer but the LM head) "
                          "or module names, comma-separated (q_proj,v_proj).")
    merge: bool = option(False, "With --lora-r: also write the adapter merged into its base as a full model, "
                         "OUT/merged.", flags=("--merge/--no-merge",), param="merge")

    @property
    def enabled(self) -> bool:
        return self.r > 0

    def target_modules(self) -> str | list[str]:
        if self.targets.strip() == ALL_LINEAR:
            return ALL_LINEAR
        return [name.strip() for name in self.targets.split(",") if name.strip()]

    def validate(self) -> None:
        if self.r < 0:
            raise ValueError("--lora-r must be 0 (full fine-tuning) or a positive rank")
        if self.merge and not self.enabled:
            raise ValueError("--merge goes with --lora-r: a full fine-tune already writes a full model")
        if self.enabled:
            if self.alpha <= 0:
                raise ValueError("--lora-alpha must be positive")
            if not 0 <= self.dropout < 1:
                raise ValueError("--lora-dropout must lie in [0, 1)")
            if not self.target_modules():
                raise ValueError("--lora-targets names no module (give all-linear or names such as q_proj,v_proj)")

    def to_json(self) -> dict:
        return asdict(self)


def base_reference(spec: str) -> str:
    """What an adapter records as its base, in a form plain transformers/peft resolve
    (``AutoPeftModelForCausalLM.from_pretrained(run)``): a local folder as an absolute path (the run
    may be loaded from another directory), the bundled model's name as its converted folder in the
    cache (the name itself stays in the run's run_config.json), a hub id as given."""
    if spec == BUNDLED:
        return str(bundled_folder().resolve())
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.is_dir() else spec


def add_adapter(model, config: LoRAConfig, base: str, kind: str = "causal", seed: int = 0):
    """``model`` inside a fresh LoRA adapter: only the adapter (and a reward/value head) trainable.

    ``kind``: ``causal`` (an LM), ``reward`` (a sequence-classification head) or ``value`` (a
    token-classification head). The adapter's A matrices are drawn from ``seed`` without touching
    the global RNG, so every process of a run, and a resumed run, builds the same adapter.
    """
    from peft import LoraConfig, get_peft_model

    if kind not in _TASK_TYPES:
        raise ValueError(f"unknown model kind {kind!r}: one of {', '.join(_TASK_TYPES)}")
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    heads = [head for head in HEADS if head in names] if kind != "causal" else []
    peft_config = LoraConfig(
        r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=config.target_modules(),
        task_type=_TASK_TYPES[kind], exclude_modules=heads or None, modules_to_save=heads or None,
    )
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        # peft asks transformers a deprecated question; the warning says nothing to a user of ours
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        wrapped = get_peft_model(model, peft_config)
    wrapped.peft_config["default"].base_model_name_or_path = base_reference(base)
    return wrapped


def for_training(model, config: LoRAConfig, base: str, kind: str = "causal", seed: int = 0):
    """The model a trainer trains: with an adapter added when ``config.r > 0``, else itself."""
    config.validate()
    return add_adapter(model, config, base, kind, seed) if config.enabled else model


@contextlib.contextmanager
def adapter_disabled(model):
    """Inside the block ``model`` computes as its base (the adapter switched off): the frozen
    reference of a LoRA run without a second copy of the weights. A plain model is itself."""
    if is_adapted(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


def load_adapter_weights(model, path: Path) -> None:
    """Put an adapter checkpoint's weights (``adapter_model.safetensors``) into ``model``, in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(path).parent
    if not is_adapted(model):
        raise ValueError(f"{folder}: holds a LoRA adapter, but this run trains every weight (resume with the run's --lora-r)")
    try:
        result = set_peft_model_state_dict(model, load_file(str(path)))
    except RuntimeError as err:  # shape mismatch: another rank or other targets
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{folder}: the adapter does not fit this run (another --lora-r or --lora-targets?): {first}") from None
    missing = [key for key in result.missing_keys if "lora_" in key or "modules_to_save" in key]
    if missing or result.unexpected_keys:
        raise ValueError(f"{folder}: the adapter does not fit this run (missing {missing[:3]}, "
                         f"unexpected {list(result.unexpected_keys)[:3]}); resume with the run's --lora-* flags")


def save_merged(model, tokenizer, folder: Path) -> Path:
    """Fold the adapter into its base and write a full model folder. Consumes the adapter: call it
    once training is over."""
    merged = model.merge_and_unload() if is_adapted(model) else model
    save_pretrained(merged, tokenizer, folder)
    return Path(folder)


@dataclass(frozen=True)
class TrainableSummary:
    trainable: int  # parameters the optimizer updates
    total: int  # parameters in memory (a tied embedding counted once)
    optimizer_state_bytes: int  # AdamW: exp_avg + exp_avg_sq per trainable tensor, plus its step counter

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def message(self) -> str:
        return (f"trainable parameters: {self.trainable:,} of {self.total:,} ({self.share:.2%}); "
                f"AdamW state {_size(self.optimizer_state_bytes)}")


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} bytes"


def trainable_summary(*models) -> TrainableSummary:
    """Trainable parameters of ``models`` and the AdamW state they will need (torch's AdamW keeps two
    moment tensors of each parameter's size and dtype, and a float32 step tensor per parameter)."""
    seen: set[int] = set()
    trainable = total = state = 0
    for model in models:
        for parameter in model.parameters():
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            total += parameter.numel()
            if parameter.requires_grad:
                trainable += parameter.numel()
                state += 2 * parameter.numel() * parameter.element_size() + 4
    return TrainableSummary(trainable, total, state)


def effective_weights(model) -> dict[str, torch.Tensor]:
    """The weights ``model`` computes with, keyed by its plain (un-adapted) parameter names.

    A plain model's own parameters; an adapted model's LoRA layers as one merged weight
    ``W0 + ΔW`` (peft's ``get_delta_weight``: ``(α/r)·B·A``), never A and B apart: a weighted mix
    of two adapted models is a mix of their ``W0 + ΔW`` (``α·B1A1 + (1−α)·B2A2`` is no ``B·A`` of
    mixed factors). Detached views of the model's own tensors except the merged ones."""
    if not is_adapted(model):
        return {name: parameter.detach() for name, parameter in model.named_parameters()}
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    weights = {name.replace(".base_layer.", "."): parameter.detach()
               for name, parameter in base.named_parameters() if "lora_" not in name}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not module.merged:
            key = f"{name}.weight"
            for adapter in module.active_adapters:
                weights[key] = weights[key] + module.get_delta_weight(adapter).to(weights[key].dtype)
    return weights
