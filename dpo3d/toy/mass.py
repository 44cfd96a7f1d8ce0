"""Where the probability mass went: every response of a prompt by class, and the model's argmax.

For prompt i the ten responses split into five classes: its own chosen (response i),
its own rejected (those in its pairs), the other prompts' chosen (the other three
of 1–4), the other rejected (5–8 in none of its pairs) and the unseen 9–10. The
change of each class's mass is measured over two windows, means over prompts:
from the reference (step 0) to the last step, and from the chosen's peak (the
step where the mean π(i|i) is highest) to the last step, the degradation phase.

The *argmax* response is the one the reference model gives the most probability for
the prompt: the squeezing effect (Ren & Sutherland 2025, "Learning Dynamics of LLM
Finetuning") says that a negative gradient on an unlikely response pushes mass to the
model's most likely one. Its change is reported beside the classes (it belongs to
one of them: the own chosen when the chosen is on-policy, another prompt's chosen
when it is off-policy).

``mass_shares`` is the coarser split the curves, tables and figures report: for prompt i
its own chosen (response i), the rejected 5–8 (all four, in a pair of i or not), the
other prompts' chosen (the other three of 1–4) and the unseen 9–10. The four shares sum
to 1 per prompt. Only the unseen share is dispersion in the paper's sense (mass on
responses in *no* pair, Corollary 3): the other prompts' chosen are in the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .scenarios import CHOSEN, N_PROMPTS, N_RESPONSES, REJECTED, UNSEEN, Pairs
from .train import ToyResult

MASS_CLASSES = ("own chosen", "own rejected", "other chosen", "other rejected", "unseen")
#: the four shares of a prompt's mass (mass_shares); only "unseen" is dispersion
SHARES = ("own chosen", "rejected", "other chosen", "unseen")
SHORT = {"own chosen": "own-ch", "own rejected": "own-rej", "other chosen": "oth-ch", "other rejected": "oth-rej", "unseen": "unseen"}


def class_masks(pairs: Pairs) -> torch.Tensor:
    """(classes, prompts, responses), True where the response is of that class for that prompt (a partition)."""
    masks = torch.zeros(len(MASS_CLASSES), N_PROMPTS, N_RESPONSES, dtype=torch.bool)
    for prompt in range(N_PROMPTS):
        own = pairs.responses_of(prompt)
        for response in range(N_RESPONSES):
            if response == CHOSEN[prompt]:
                kind = "own chosen"
            elif response in own:
                kind = "own rejected"
            elif response in CHOSEN:
                kind = "other chosen"
            elif response in REJECTED:
                kind = "other rejected"
            else:
                assert response in UNSEEN
                kind = "unseen"
            masks[MASS_CLASSES.index(kind), prompt, response] = True
    return masks


def share_masks() -> torch.Tensor:
    """(shares, prompts, responses), True where the response is in that share for that prompt (a partition)."""
    masks = torch.zeros(len(SHARES), N_PROMPTS, N_RESPONSES, dtype=torch.bool)
    for prompt in range(N_PROMPTS):
        masks[0, prompt, CHOSEN[prompt]] = True
        masks[1, prompt, list(REJECTED)] = True
        masks[2, prompt, [c for c in CHOSEN if c != CHOSEN[prompt]]] = True
        masks[3, prompt, list(UNSEEN)] = True
    return masks


def mass_shares(probs: torch.Tensor) -> torch.Tensor:
    """``probs`` (..., prompts, responses) -> (..., prompts, shares): each prompt's mass in each of SHARES."""
    return torch.einsum("...pv,spv->...ps", probs, share_masks().to(probs.dtype))


@dataclass
class MassMoves:
    """Per run: the mass change of each class and of the reference argmax, over the two windows."""

    to_final: torch.Tensor  # (runs, classes + 1): reference → last step; the last column is the argmax response
    after_peak: torch.Tensor  # (runs, classes + 1): chosen peak → last step
    peak_step: list[int]
    reference_argmax: list[list[str]]  # per run, per prompt: the class of the reference's most likely response
    final_argmax: list[list[str]]  # the same at the last step


def mass_moves(result: ToyResult) -> MassMoves:
    probs = result.history.probs  # (R, T, P, V)
    masks = class_masks(result.pairs).to(probs.dtype)  # (C, P, V)
    chosen = probs[:, :, torch.arange(N_PROMPTS), torch.tensor(CHOSEN)].mean(-1)  # (R, T)
    peak_step = chosen.argmax(-1)  # the first step of the highest mean π(i|i)
    runs = torch.arange(probs.shape[0])
    reference, peak, final = probs[:, 0], probs[runs, peak_step], probs[:, -1]  # (R, P, V)
    argmax = reference.argmax(-1)  # (R, P)

    def moved(start: torch.Tensor) -> torch.Tensor:
        by_class = torch.einsum("rpv,cpv->rc", final - start, masks) / N_PROMPTS
        on_argmax = (final - start).gather(-1, argmax[..., None]).squeeze(-1).mean(-1)
        return torch.cat([by_class, on_argmax[:, None]], dim=-1)

    def class_of(index: torch.Tensor) -> list[list[str]]:
        hit = masks.bool()[:, torch.arange(N_PROMPTS)[None, :], index]  # (C, R, P)
        return [[MASS_CLASSES[int(hit[:, r, p].nonzero())] for p in range(N_PROMPTS)] for r in range(index.shape[0])]

    return MassMoves(
        to_final=moved(reference),
        after_peak=moved(peak),
        peak_step=peak_step.tolist(),
        reference_argmax=class_of(argmax),
        final_argmax=class_of(final.argmax(-1)),
    )
