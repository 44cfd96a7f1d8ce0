"""The toy world of §3.2: 4 prompts, 10 responses, the preference pairs and the step-1 distributions.

Responses are numbered as in the paper (1-based in every record and figure; 0-based
indices in tensors): 1–4 are the chosen ones (response i is optimal for prompt i),
5–8 the rejected ones, 9–10 are unseen (they appear in no pair).

A *scenario* is the hand-set distribution step 1 trains the MLP towards (the SFT
stand-in). App. C / Table 4 cross chosen on/off-policy with rejected on/off-policy;
in the toy, "on-policy" means the step-1 model already gives that response class a
high probability, "off-policy" a low one. The numbers are ours (the paper's were
lost from its text) and are the same for every prompt i:

    π(i | i)          chosen      0.30 on-policy, 0.02 off-policy
    π(5..8 | i)       rejected    0.12 each on-policy, 0.02 each off-policy
    π(9 | i), π(10 | i) unseen    0.05 each, in every scenario
    π(j | i), j≠i ≤ 4 other prompts' chosen: the rest, shared equally

so only the two classes a scenario is about differ between scenarios.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dpo3d.data.records import RecordError

N_PROMPTS = 4
N_RESPONSES = 10
CHOSEN = (0, 1, 2, 3)  # tensor index of response i+1; prompt i's optimal response is CHOSEN[i]
REJECTED = (4, 5, 6, 7)
UNSEEN = (8, 9)

ON_POLICY_CHOSEN = 0.30
OFF_POLICY_CHOSEN = 0.02
ON_POLICY_REJECTED = 0.12  # each of the four
OFF_POLICY_REJECTED = 0.02
UNSEEN_PROBABILITY = 0.05  # each of the two


@dataclass(frozen=True)
class Scenario:
    """A named step-1 target: ``probs[prompt][response]``, every row a distribution."""

    name: str
    title: str
    probs: tuple[tuple[float, ...], ...]

    def tensor(self) -> torch.Tensor:
        return torch.tensor(self.probs, dtype=torch.float64)


def class_distribution(chosen: float, rejected: float, unseen: float = UNSEEN_PROBABILITY) -> tuple[tuple[float, ...], ...]:
    """Per-response probabilities by class; the other prompts' chosen responses share the rest.

    Every probability must be > 0: the reference model's log-probs enter every loss,
    and a zero target is only reached after infinite training.
    """
    rest = 1.0 - chosen - len(REJECTED) * rejected - len(UNSEEN) * unseen
    other = rest / (len(CHOSEN) - 1)
    if min(chosen, rejected, unseen) <= 0 or other <= 0:
        raise ValueError(
            f"chosen={chosen}, rejected={rejected} (x4), unseen={unseen} (x2) leave {rest:.4g} for the "
            "3 other chosen responses; every probability must be > 0"
        )
    rows = []
    for prompt in range(N_PROMPTS):
        row = [other] * N_RESPONSES
        row[CHOSEN[prompt]] = chosen
        for index in REJECTED:
            row[index] = rejected
        for index in UNSEEN:
            row[index] = unseen
        rows.append(tuple(row))
    return tuple(rows)


def _policy(on: bool) -> str:
    return "on" if on else "off"


def _builtin(number: int, chosen_on: bool, rejected_on: bool) -> Scenario:
    chosen = ON_POLICY_CHOSEN if chosen_on else OFF_POLICY_CHOSEN
    rejected = ON_POLICY_REJECTED if rejected_on else OFF_POLICY_REJECTED
    title = f"S{number}: chosen {_policy(chosen_on)}-policy ({chosen:g}), rejected {_policy(rejected_on)}-policy ({rejected:g} each)"
    return Scenario(str(number), title, class_distribution(chosen, rejected))


#: App. C, Table 4: 1 = both on-policy, 2 = chosen off, 3 = rejected off, 4 = both off
SCENARIOS: dict[str, Scenario] = {
    "1": _builtin(1, True, True),
    "2": _builtin(2, False, True),
    "3": _builtin(3, True, False),
    "4": _builtin(4, False, False),
}


def load_distribution(path: str | Path) -> Scenario:
    """A custom step-1 distribution from a small JSON file, in one of two shapes.

    By class (per-response probabilities; the other prompts' chosen share the rest)::

        {"name": "mild", "chosen": 0.4, "rejected": 0.1, "unseen": 0.05}

    or in full, one row of 10 probabilities per prompt::

        {"name": "mine", "probs": [[...10 numbers...], [...], [...], [...]]}

    Raises RecordError naming the file and the problem.
    """
    source = str(path)
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(source, None, "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RecordError(source, None, f"not valid JSON: {err}") from None
    if not isinstance(spec, dict):
        raise RecordError(source, None, "expected a JSON object with 'probs' or 'chosen'/'rejected'")
    name = spec.get("name", Path(path).stem)
    if not isinstance(name, str) or not name:
        raise RecordError(source, None, "'name' should be a non-empty string")
    if "probs" in spec:
        probs = _check_rows(spec["probs"], source)
        return Scenario(name, f"{name}: custom ({source})", probs)
    try:
        values = {key: float(spec[key]) for key in ("chosen", "rejected")}
        values["unseen"] = float(spec.get("unseen", UNSEEN_PROBABILITY))
    except KeyError as err:
        raise RecordError(source, None, f"missing field {err}; give 'probs' or 'chosen' and 'rejected'") from None
    except (TypeError, ValueError):
        raise RecordError(source, None, "'chosen', 'rejected' and 'unseen' should be numbers") from None
    try:
        probs = class_distribution(**values)
    except ValueError as err:
        raise RecordError(source, None, str(err)) from None
    title = f"{name}: chosen {values['chosen']:g}, rejected {values['rejected']:g} each, unseen {values['unseen']:g} each"
    return Scenario(name, title, probs)


def _check_rows(rows: object, source: str) -> tuple[tuple[float, ...], ...]:
    shape = f"{N_PROMPTS} rows of {N_RESPONSES} probabilities"
    if not isinstance(rows, list) or len(rows) != N_PROMPTS:
        raise RecordError(source, None, f"'probs' should be {shape}")
    checked = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, list) or len(row) != N_RESPONSES:
            raise RecordError(source, None, f"'probs' row {number} should hold {N_RESPONSES} numbers")
        if not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in row):
            raise RecordError(source, None, f"'probs' row {number} should hold only numbers")
        if min(row) <= 0:
            raise RecordError(source, None, f"'probs' row {number}: every probability must be > 0")
        if not math.isclose(sum(row), 1.0, abs_tol=1e-6):
            raise RecordError(source, None, f"'probs' row {number} sums to {sum(row):.6g}, not 1")
        checked.append(tuple(float(value) / sum(row) for value in row))
    return tuple(checked)


@dataclass(frozen=True)
class Pairs:
    """The preference data set: pair k is (prompt[k], chosen[k], rejected[k]), 0-based indices."""

    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.prompt)

    def responses_of(self, prompt: int) -> set[int]:
        """Every response in one of this prompt's pairs (its chosen and its drawn rejected)."""
        return {
            response
            for k, p in enumerate(self.prompt)
            if p == prompt
            for response in (self.chosen[k], self.rejected[k])
        }

    def as_records(self) -> list[dict]:
        """1-based, as the paper numbers prompts and responses."""
        return [
            {"prompt": p + 1, "chosen": c + 1, "rejected": r + 1}
            for p, c, r in zip(self.prompt, self.chosen, self.rejected, strict=True)
        ]


REJECTED_DRAWS = ("random", "distinct")


def draw_pairs(pairs_per_prompt: int = 1, rejected_draw: str = "random", seed: int = 0) -> Pairs:
    """Pairs (prompt i, response i, a rejected response drawn from 5–8), as §3.2.1 builds them.

    ``random`` draws each pair's rejected uniformly and independently; ``distinct``
    draws without replacement, so a prompt's pairs use different rejected responses
    (at most 4 pairs per prompt).
    """
    if pairs_per_prompt < 1:
        raise ValueError("pairs per prompt must be at least 1")
    if rejected_draw not in REJECTED_DRAWS:
        raise ValueError(f"rejected draw must be one of {', '.join(REJECTED_DRAWS)}, not '{rejected_draw}'")
    if rejected_draw == "distinct" and pairs_per_prompt > len(REJECTED):
        raise ValueError(f"'distinct' rejected draws allow at most {len(REJECTED)} pairs per prompt")
    generator = torch.Generator().manual_seed(seed)
    prompts: list[int] = []
    rejected: list[int] = []
    for prompt in range(N_PROMPTS):
        if rejected_draw == "distinct":
            picks = torch.randperm(len(REJECTED), generator=generator)[:pairs_per_prompt]
        else:
            picks = torch.randint(len(REJECTED), (pairs_per_prompt,), generator=generator)
        prompts += [prompt] * pairs_per_prompt
        rejected += [REJECTED[int(pick)] for pick in picks]
    return Pairs(tuple(prompts), tuple(CHOSEN[p] for p in prompts), tuple(rejected))


def select_scenarios(names: Sequence[str]) -> tuple[Scenario, ...]:
    """Built-in scenarios by number ('1'..'4'), or all of them for 'all'."""
    if list(names) == ["all"]:
        return tuple(SCENARIOS.values())
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario {', '.join(unknown)}; choose from 1, 2, 3, 4 or all")
    return tuple(SCENARIOS[name] for name in names)
