"""What a study is: its settings, its scenarios, its cells and where each output lives.

A *cell* is one (scenario, loss) training run. Every cell starts from the same
model, trains for the same number of steps with the same batch, learning rate and
seed, so the cells differ only in where their pairs' responses came from and in
the loss.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dpo3d.config.fields import option, settings
from dpo3d.models.loading import LoadOptions
from dpo3d.models.lora import LoRAConfig
from dpo3d.pairs.building import REFERENCE
from dpo3d.training.config import LoopConfig
from dpo3d.watch.probe_responses import ProbeResponseConfig

if TYPE_CHECKING:
    from ..losses.bound import BoundLoss

#: the labels the study gives its two samplers' candidates (their `source`)
POLICY = "policy"
WEAK = "weak"

#: the paper's App. C, Table 4: where each scenario's chosen and rejected responses come from
SCENARIOS: dict[int, tuple[str, str]] = {
    1: (POLICY, POLICY),  # both on-policy: best vs worst of the policy's own samples
    2: (REFERENCE, POLICY),  # chosen off-policy: the dataset's solution
    3: (POLICY, WEAK),  # rejected off-policy: another (weaker) model's answer
    4: (REFERENCE, WEAK),  # both off-policy
}

SCENARIO_TEXT = {
    1: "chosen policy, rejected policy",
    2: "chosen dataset solution, rejected policy",
    3: "chosen policy, rejected off-policy",
    4: "chosen dataset solution, rejected off-policy",
}

DEFAULT_LOSSES = ("dpo", "flex", "dpo-sft", "ipo")
START = "start"  # the label of the starting model in the tables


@dataclass(frozen=True)
class LLMJudgeSettings:
    """`--judge llm`: an OpenAI-compatible endpoint grading the test answers 1-5 (the paper's rubric)."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    rubric: str | None = None  # a template's text; None: the paper's rubric
    cache_path: str | None = None


#: the stand-in off-policy model's temperature (the policy itself sampled hot; docs/study.md measured 1.2 and 1.6)
STAND_IN_TEMPERATURE = 1.2
#: the shared loop settings a study's cells take from its command (epochs: cells train max_steps; resume: a
#: study resumes itself, cell by cell)
STUDY_LOOP_FIELDS = frozenset(s.name for s in settings(LoopConfig)) - {"epochs", "resume"}
#: where a study's loop defaults differ from LoopConfig's (a dozen steps on a small model), stated once
STUDY_LOOP_DEFAULTS = {"lr": 2e-5, "batch_size": 4, "grad_accum": 1, "max_steps": 12, "warmup_ratio": 0.0,
                       "schedule": "constant", "log_every": 2, "save_every": 4}
#: what a loop setting means in a study
STUDY_LOOP_HELP = {
    "max_steps": "Optimizer steps of every cell (the same budget for all).",
    "lr": "Learning rate of every cell (and of the reward model unless --rm-lr).",
    "seed": "Seed of the sampling, the split and every cell.",
}
#: the loop fields a study folder's results depend on, under the names study folders have recorded them by
FINGERPRINT_LOOP = {"max_steps": "steps", "batch_size": "batch_size", "grad_accum": "grad_accum", "lr": "lr",
                    "schedule": "schedule", "warmup_ratio": "warmup_ratio", "log_every": "log_every", "seed": "seed",
                    "mixed_precision": "mixed_precision"}
#: loop fields that shape the results but came to studies later: recorded only where they leave their default
FINGERPRINT_LOOP_LATER = ("weight_decay", "max_grad_norm")


def study_loop(**changes) -> LoopConfig:
    """The loop section every cell of a study starts from: LoopConfig with the study's defaults."""
    return LoopConfig(out=Path("."), **{**STUDY_LOOP_DEFAULTS, **changes})


@dataclass
class StudyConfig:
    """A study: its data, scenarios and losses, sampling, the loop section every cell shares (``loop``,
    LoopConfig with the study's defaults: every trainer option reaches the cells) and LoRA."""

    out: Path
    model: str
    loop: LoopConfig = field(default_factory=study_loop)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    # every cell's squeezing probes (a measurement: not part of what a study folder's results depend on)
    probe_responses: ProbeResponseConfig = field(default_factory=ProbeResponseConfig)
    train_prompts: str = "gsm8k:train"
    test_prompts: str = "gsm8k:test"
    columns: str | None = None  # FIELD=COLUMN,... of both prompt sources (--columns)
    subset: str | None = None  # a hub source's config (--subset)
    train_limit: int | None = option(64, "Training prompts sampled.", min=1)
    test_limit: int | None = option(32, "Test prompts answered by every model.", min=1)
    ood_test_prompts: str | None = option(
        None, "A second, out-of-domain test set (a built-in or a prompt file) every model also answers, judged "
        "alike and reported beside the in-domain one (training prompts left out). Default: none.")
    ood_test_limit: int | None = option(32, "Out-of-domain test prompts answered by every model.", min=1)
    task: str = option("math", "math: scenarios × losses (Tables 1, 2, 10, Fig. 4); poem: DPO vs RLHF-PPO on the "
                               "poem rules (Table 3).")
    scenarios: tuple[int, ...] = (1, 2, 3, 4)
    losses: tuple[str, ...] = DEFAULT_LOSSES
    # sampling the candidates
    n: int = option(8, "Candidates sampled per training prompt (the paper: 8).", flags=("-n",), min=2)
    temperature: float = option(0.7, "The policy's sampling temperature.", min=0.0)
    max_new_tokens: int = option(256, "Length cap of a sampled candidate (and of a PPO rollout).", min=1)
    sample_batch_size: int = option(32, "Sequences generated together.", min=1)
    weak_model: str | None = option(
        None, "The off-policy model whose answers are the rejected responses of scenarios 3 and 4 (the paper: a "
        "weaker LLM). Default: the policy itself at --weak-temperature, a stand-in (see docs/study.md).")
    # measured on SmolLM2 (docs/study.md): 1.2 reads as a weak answer, 1.6 as word salad
    weak_temperature: float | None = option(
        None, f"Sampling temperature of the off-policy responses. Default: {STAND_IN_TEMPERATURE:g} for the stand-in "
        "(the policy sampled hot), the policy's --temperature for a --weak-model (a weaker model answers as it "
        "would, not hot).", min=0.01)
    # pairs
    same_prompts: bool = True  # every scenario trains on the prompts all of them have a pair for
    heldout_share: float = option(
        0.25, "Share of the training prompts whose pairs are held out (Fig. 4, held-out accuracy).")
    # training (the same for every cell; the loop's settings are in ``loop``)
    rm_lr: float | None = option(None, "The reward model's learning rate.")
    beta: float = option(0.1, "β of every loss (IPO: τ; flex: β_w = β, β_l = β/2).")
    loss_args: tuple[str, ...] = ()  # --loss-arg KEY=VALUE: an option of every loss that takes it (after --beta's)
    max_length: int = option(512, "Cut prompt+response to this many tokens.", min=8)
    probe_size: int = option(8, "Training pairs whose log-probs each cell tracks.", min=1)
    unseen_limit: int = option(16, "The policy's other candidates tracked for dispersion.", flags=("--unseen",),
                               param="unseen", min=0)
    eval_every: int = option(2, "Held-out pair accuracy every N steps (Fig. 4's points).", min=1)
    reward_model: bool = option(True, "Train Fig. 4's reward model on scenario 1's pairs.",
                                flags=("--reward-model/--no-reward-model",))
    # evaluation
    eval_max_new_tokens: int = option(256, "Length cap of a test answer.", min=1)
    eval_batch_size: int = option(16, "Test answers generated together.", min=1)
    llm_judge: LLMJudgeSettings | None = None
    math_workers: int | None = 0  # the math judge's worker processes (0: in this process)
    # poem task (Table 3)
    ppo_rollout_batch: int = option(8, "--task poem: PPO prompts per step.", min=1)
    ppo_minibatch: int = 4
    ppo_epochs: int = option(2, "--task poem: PPO passes over each rollout batch.", min=1)
    ppo_lr: float | None = option(None, "--task poem: PPO's learning rate (default --lr).")
    ppo_kl_coef: float = 0.05
    # devices (training's: loop.cpu)
    device: str = "auto"  # sampling and evaluation
    load: LoadOptions = field(default_factory=LoadOptions)

    def validate(self) -> None:
        if self.task not in ("math", "poem"):
            raise ValueError(f"--task must be math or poem, got '{self.task}'")
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown or not self.scenarios:
            raise ValueError(f"--scenario takes 1, 2, 3 or 4, got {', '.join(map(str, unknown)) or 'none'}")
        if len(set(self.scenarios)) != len(self.scenarios) or len(set(self.losses)) != len(self.losses):
            raise ValueError("a scenario or a loss is given twice")
        if not self.losses:
            raise ValueError("give at least one --loss")
        from ..losses.bound import bind_losses
        from ..losses.options import split_loss_args

        # an unknown loss, or a --loss-arg none of the losses takes, is one line before any work
        bind_losses(self.losses, split_loss_args(self.loss_args))
        for loss in self.losses:
            self.bound_loss(loss)
        if self.n < 2:
            raise ValueError("-n must be at least 2: scenario 1 pairs the best and the worst of a prompt's samples")
        if not 0 < self.heldout_share < 1:
            raise ValueError("--heldout-share must lie in (0, 1)")
        if self.loop.max_steps is None or self.loop.max_steps < 1:
            raise ValueError("--max-steps must be at least 1")
        self.loop.validate()
        self.lora.validate()
        if self.weak_temperature is not None and self.weak_temperature <= 0:
            raise ValueError("--weak-temperature must be positive")
        if self.ood_test_prompts is not None and self.task != "math":
            raise ValueError("--ood-test-prompts goes with --task math (Table 3 has one test set)")
        for name in ("train_limit", "test_limit", "ood_test_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")

    # ------------------------------------------------------------------ what shapes the results

    def fingerprint_fields(self) -> dict:
        """The settings a study folder's results depend on (scenarios and losses excepted: adding one
        adds cells; the LLM judge, devices and checkpoint spacing excepted: they do not change what
        is trained, a resumed run being the run that was not interrupted)."""
        data = self.to_json()
        for key in ("out", "scenarios", "losses", "llm_judge", "math_workers", "device", "load", "loop", "lora",
                    "probe_responses"):
            data.pop(key)
        if not self.loss_args:  # a study folder made before --loss-arg keeps its fingerprint
            data.pop("loss_args")
        for key in ("columns", "subset"):  # recorded only when given: study folders from before them still continue
            if data[key] is None:
                data.pop(key)
        if self.ood_test_prompts is None:  # likewise the out-of-domain test set (its limit goes with it)
            data.pop("ood_test_prompts")
            data.pop("ood_test_limit")
        # the loop's settings under the names study folders recorded before the loop was a section of its own;
        # those that came later only where they differ from their default (older folders still continue)
        loop, plain = asdict(self.loop), asdict(study_loop())
        data.update({key: loop[name] for name, key in FINGERPRINT_LOOP.items()})
        data.update({name: loop[name] for name in FINGERPRINT_LOOP_LATER if loop[name] != plain[name]})
        if self.lora.enabled:
            data["lora"] = asdict(self.lora)
        data["dtype"] = str(self.load.dtype)
        data["weak_temperature"] = self.off_policy_temperature  # as resolved: folders recorded the number
        return data

    def data_fields(self) -> dict:
        """What the candidates and pairs depend on: the fingerprint less the out-of-domain test set, which
        only adds an evaluation (given to a finished study, it samples and trains nothing again)."""
        return {key: value for key, value in self.fingerprint_fields().items() if not key.startswith("ood_")}

    def to_json(self) -> dict:
        data = asdict(self)
        data["out"] = str(self.out)
        data["loop"] = self.loop.to_json()
        data["load"] = {"dtype": str(self.load.dtype), "trust_remote_code": self.load.trust_remote_code}
        data["scenarios"], data["losses"] = list(self.scenarios), list(self.losses)
        return data

    def hyperparameters(self) -> dict:
        """Every cell's hyper-parameters from --beta (flex: β_w = β, β_l = β/2; the rest: the registry's
        defaults); each loss takes the ones it has (``bound_loss``)."""
        return {"beta": self.beta, "beta_chosen": self.beta, "beta_rejected": self.beta / 2}

    def bound_loss(self, name: str) -> BoundLoss:
        """The loss of a cell, bound once where the cell's run starts, with the options of --beta and
        --loss-arg it takes."""
        from ..losses.bound import bind_losses
        from ..losses.options import split_loss_args

        options = {**self.hyperparameters(), **split_loss_args(self.loss_args)}
        (loss,) = bind_losses([name], options, may_go_unused=set(options))
        return loss

    @property
    def off_policy_temperature(self) -> float:
        """The off-policy responses' sampling temperature: --weak-temperature where given, else the
        stand-in's (the policy sampled hot) or, for a --weak-model, the policy's own."""
        if self.weak_temperature is not None:
            return self.weak_temperature
        return STAND_IN_TEMPERATURE if self.weak_model is None else self.temperature

    @property
    def weak_label(self) -> str:
        """How the off-policy rejected responses are described in the tables."""
        if self.weak_model is None:
            return f"the policy at temperature {self.off_policy_temperature:g} (stand-in)"
        return f"{self.weak_model} at temperature {self.off_policy_temperature:g}"


def check_folder(config: StudyConfig) -> None:
    """Refuse a study folder written with other settings (a rerun with the same ones continues it)."""
    path = Path(config.out) / "study_config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8")).get("fingerprint", {})
    now = json.loads(json.dumps(config.fingerprint_fields()))
    changed = [f"{key} {saved[key]!r} -> {now[key]!r}" for key in now if key in saved and saved[key] != now[key]]
    if changed:
        raise ValueError(
            f"{config.out} holds a study with other settings ({'; '.join(changed)}): "
            "rerun with the same ones to continue it, or choose another --out"
        )


def fingerprint(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- where things live


def slug(loss: str) -> str:
    """A loss name as a folder name (mixtures such as dpo:0.8,sft:1.0 included)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", loss)


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    @property
    def evals(self) -> Path:
        return self.root / "eval"

    def pairs(self, scenario: int, split: str) -> Path:
        return self.data / f"scenario{scenario}_{split}.jsonl"

    def cell(self, scenario: int, loss: str) -> Path:
        return self.root / "cells" / f"s{scenario}-{slug(loss)}"

    @property
    def rm(self) -> Path:
        return self.root / "cells" / "s1-rm"

    @property
    def ood_evals(self) -> Path:
        return self.evals / "ood"

    def eval_file(self, label: str) -> Path:
        return self.evals / f"{slug(label)}.jsonl"


def cell_label(scenario: int, loss: str) -> str:
    return f"s{scenario}-{loss}"
