"""What an iterate run is: its settings (each declared once, with its help) and where each output lives."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from dpo3d.config.fields import option
from dpo3d.data import inputs
from dpo3d.judges.rewards import REWARD_HELP
from dpo3d.models.loading import LoadOptions
from dpo3d.models.precision import AUTO, INFERENCE_DTYPE_HELP, check_inference_dtype
from dpo3d.training.dpo import DPORunConfig

#: the reference each round trains against
REFERENCES = {
    "initial": "the starting --model, every round (the KL anchor never moves)",
    "previous": "the round's own start, the previous round's model (the anchor moves once a round)",
}
#: where a round's loop defaults differ from LoopConfig's: a few steps on each round's fresh pairs
ITERATE_LOOP_DEFAULTS = {"max_steps": 8, "batch_size": 4, "grad_accum": 1, "lr": 2e-5, "warmup_ratio": 0.0,
                         "schedule": "constant", "log_every": 2}
ITERATE_LOOP_HELP = {"max_steps": "Optimizer steps of each round (the same for every round).",
                     "seed": "Seed of the sampling (plus the round's number), the probe set and every round's training."}


@dataclass
class IterateConfig:
    """An iterate run. ``train`` holds every train-dpo setting of a round (loss, loop, LoRA, probes,
    guard); its model, pairs, reference and run folder are each round's own."""

    out: Path
    model: str
    prompts: str | inputs.DataSpec
    train: DPORunConfig
    limit: int | None = None  # read only the first N prompts
    rounds: int = option(3, "Rounds of sample → judge → build-pairs → train-dpo.", min=1)
    prompts_per_round: int | None = option(
        None, "Fresh prompts each round: round r samples the r-th block of N prompts. Default: every round "
        "samples the same prompts (all of them, or the first --limit).", min=1)
    n: int = option(4, "Candidates sampled per prompt and round; the best and the worst become its pair.",
                    flags=("-n",), min=2)
    temperature: float = option(0.7, "Sampling temperature of the round's policy.", min=0.01)
    max_new_tokens: int = option(256, "Length cap of a sampled candidate.", min=1)
    sample_batch_size: int = option(32, "Sequences generated together.", min=1)
    sample_dtype: str = option(AUTO, "Weights dtype of the sample stage (training keeps --dtype): "
                                     + INFERENCE_DTYPE_HELP)
    backend: str = option("hf", "Sampling backend: hf (transformers generate) or vllm (GPUs; pip install "
                                "dpo3d[vllm]).")
    reward: str = option("math", f"How candidates are scored (the judge; ppo's rewards): {REWARD_HELP}.",
                         flags=("--reward", "-r"))
    min_gap: float = option(0.0, "Keep a prompt's pair only when chosen − rejected scores at least this "
                                 "(above 0 always).", min=0.0)
    reference: str = option("initial", "The reference of each round: " + "; ".join(
        f"{name}: {what}" for name, what in REFERENCES.items()) + ".")
    device: str = "auto"  # sampling and judging; training follows train.loop.cpu
    load: LoadOptions = field(default_factory=LoadOptions)

    def validate(self) -> None:
        if self.rounds < 1:
            raise ValueError("--rounds must be at least 1")
        if self.n < 2:
            raise ValueError("-n must be at least 2: a round pairs the best and the worst of a prompt's samples")
        if self.reference not in REFERENCES:
            raise ValueError(f"--reference takes {' or '.join(REFERENCES)}, got '{self.reference}'")
        try:
            check_inference_dtype(self.sample_dtype)
        except ValueError as error:
            raise ValueError(f"--sample-dtype: {error}") from None
        if self.train.ref is not None:
            raise ValueError("a round's reference is chosen by --reference (initial or previous), not --ref")
        from dpo3d.generation.sampler import check_backend

        check_backend(self.backend)
        self.train.loop.validate()
        self.train.lora.validate()

    def to_json(self) -> dict:
        data = {key: value for key, value in asdict(self).items() if key not in ("train", "load")}
        data["out"], data["prompts"] = str(self.out), str(self.prompts)
        data["load"] = {"dtype": str(self.load.dtype), "trust_remote_code": self.load.trust_remote_code}
        data["train"] = {"loss": self.train.loss.name, "options": dict(self.train.loss.options),
                         "loop": self.train.loop.to_json(), "lora": self.train.lora.to_json(),
                         "guard": self.train.guard, "probe_size": self.train.probe_size}
        return data


@dataclass(frozen=True)
class Layout:
    """Where an iterate run keeps its outputs: one folder per round, each stage a file of its own."""

    root: Path

    @property
    def probe_pairs(self) -> Path:
        return self.root / "probe_pairs.jsonl"

    def round(self, number: int) -> Path:
        return self.root / f"round-{number}"

    def samples(self, number: int) -> Path:
        return self.round(number) / "samples.jsonl"

    def judged(self, number: int) -> Path:
        return self.round(number) / "judged.jsonl"

    def pairs(self, number: int) -> Path:
        return self.round(number) / "pairs.jsonl"

    def run(self, number: int) -> Path:
        """The round's train-dpo run folder: its final model is the next round's policy."""
        return self.round(number) / "train"
