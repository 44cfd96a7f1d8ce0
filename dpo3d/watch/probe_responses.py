"""The squeezing-effect probes: the starting policy's own responses to the probe prompts.

Ren & Sutherland (2025, "Learning Dynamics of LLM Finetuning", ICLR 2025) show that a
negative gradient on an unlikely response (DPO's rejected side, off-policy above all)
does not spread the mass it removes evenly: it *squeezes* it onto the response the
model already finds most likely. To see that in a run, the probes need responses that
are the model's own: before training, for every probe pair's prompt, the starting
policy's greedy response and a few samples are generated once, stored in the run
folder (``probe_responses.json``, so a resumed run probes the same responses), and
their log-probs and per-token entropy are measured at every logged step beside the
chosen, rejected and unseen ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from dpo3d.config.fields import option
from dpo3d.data.records import write_json
from dpo3d.data.sequences import EncodedPair
from dpo3d.generation.sampler import SamplingConfig, generate_ids

FILE = "probe_responses.json"
GREEDY, SAMPLES = "greedy", "samples"


@dataclass(frozen=True)
class ProbeResponseConfig:
    """What the squeezing probes generate before training (``greedy`` False and ``samples`` 0: none)."""

    greedy: bool = option(
        True, "Squeezing probe: before training, the starting policy's greedy response to each probe prompt; its "
        "log-prob change (probe_greedy_logp_delta) and per-token entropy are logged (Ren & Sutherland 2025: DPO's "
        "negative gradient squeezes mass onto the most likely response).",
        flags=("--probe-greedy/--no-probe-greedy",))
    samples: int = option(
        2, "Squeezing probe: responses sampled from the starting policy per probe prompt (probe_samples_logp_delta); "
        "0: none.", min=0)
    temperature: float = option(1.0, "Temperature of the --probe-samples.", min=0.01)
    max_new_tokens: int = option(128, "Longest greedy/sampled probe response, in tokens.", flags=("--probe-new-tokens",),
                                 param="probe_new_tokens", min=1)
    batch_size: int = option(16, "Sequences generated together.", cli=False)

    @property
    def enabled(self) -> bool:
        return self.greedy or self.samples > 0

    def validate(self) -> None:
        if self.samples < 0:
            raise ValueError("--probe-samples must be 0 or more")
        if self.max_new_tokens < 1:
            raise ValueError("--probe-new-tokens must be at least 1")
        if self.temperature <= 0:
            raise ValueError("--probe-temperature must be positive (the greedy response is generated anyway)")


def _generate(model, tokenizer, prompts: list[list[int]], sampling: SamplingConfig) -> list[EncodedPair]:
    per_batch = max(1, sampling.batch_size // sampling.n)
    out: list[EncodedPair] = []
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start : start + per_batch]
        generated = generate_ids(model, tokenizer, chunk, sampling)
        for row, (ids, _) in enumerate(generated):
            # a response that is only the end-of-turn token still has that token to score
            out.append(EncodedPair(list(chunk[row // sampling.n]), ids or [tokenizer.eos_token_id]))
    return out


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], config: ProbeResponseConfig, seed: int) -> dict[str, list[EncodedPair]]:
    """The greedy response and ``config.samples`` samples for each prompt (token ids), seeded."""
    was_training = model.training
    model.eval()
    found: dict[str, list[EncodedPair]] = {}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if config.greedy:
                greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
                found[GREEDY] = _generate(model, tokenizer, prompts, greedy)
            if config.samples:
                sampled = SamplingConfig(n=config.samples, temperature=config.temperature, top_p=1.0,
                                         max_new_tokens=config.max_new_tokens, batch_size=max(config.batch_size, config.samples))
                found[SAMPLES] = _generate(model, tokenizer, prompts, sampled)
    finally:
        model.train(was_training)
    return found


def store(out: Path, config: ProbeResponseConfig, seed: int, responses: dict[str, list[EncodedPair]]) -> None:
    data = {"config": asdict(config), "seed": seed,
            "responses": {name: [[p.prompt_ids, p.response_ids] for p in pairs] for name, pairs in responses.items()}}
    write_json(data, Path(out) / FILE)


def load(out: Path, config: ProbeResponseConfig, seed: int, prompts: list[list[int]]) -> dict[str, list[EncodedPair]] | None:
    """The stored responses if they were made for these settings and prompts; else None."""
    path = Path(out) / FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("config") != asdict(config) or data.get("seed") != seed:
        return None
    responses = {name: [EncodedPair(list(p), list(r)) for p, r in pairs] for name, pairs in data["responses"].items()}
    wanted = {tuple(p) for p in prompts}
    if any(tuple(pair.prompt_ids) not in wanted for pairs in responses.values() for pair in pairs):
        return None
    return responses


def probe_responses(model, tokenizer, prompts: list[list[int]], config: ProbeResponseConfig, seed: int,
                    out: Path, main: bool = True) -> dict[str, list[EncodedPair]]:
    """Read back from the run folder (resume) or generate and store (the main process writes)."""
    if not config.enabled or not prompts:
        return {}
    found = load(out, config, seed, prompts)
    if found is None:
        found = generate(model, tokenizer, prompts, config, seed)
        if main:
            Path(out).mkdir(parents=True, exist_ok=True)
            store(out, config, seed, found)
    return found
