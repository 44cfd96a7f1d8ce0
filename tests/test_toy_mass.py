"""Where the toy's probability mass went (dpo3d.toy.mass), on distributions worked by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dpo3d.toy.mass import MASS_CLASSES, SHARES, class_masks, mass_moves, mass_shares, share_masks
from dpo3d.toy.scenarios import Pairs, draw_pairs
from dpo3d.toy.sweep_table import mass_markdown

PAIRS = Pairs(prompt=(0, 1, 2, 3), chosen=(0, 1, 2, 3), rejected=(4, 5, 6, 7))


def test_the_classes_partition_every_prompt_s_responses():
    masks = class_masks(draw_pairs(1, seed=0))
    assert (masks.sum(0) == 1).all()
    assert masks.sum(-1).T.tolist() == [[1, 1, 3, 3, 2]] * 4  # own chosen, own rejected, other chosen, other rejected, unseen
    masks = class_masks(PAIRS)
    own_rejected = MASS_CLASSES.index("own rejected")
    assert masks[own_rejected].nonzero().tolist() == [[0, 4], [1, 5], [2, 6], [3, 7]]


def fake_run() -> SimpleNamespace:
    """Three steps of one run. Step 0 (reference), every prompt: chosen 0.3, each rejected 0.12,
    each unseen 0.05, each other chosen 0.04. Step 1: chosen 0.9, response (i+1) mod 4 0.1.
    Step 2: the same with chosen 0.7 / 0.3, except prompt 4: chosen 0.3 / 0.7."""
    probs = torch.zeros(1, 3, 4, 10, dtype=torch.float64)
    for prompt in range(4):
        probs[0, 0, prompt] = torch.tensor([0.04] * 4 + [0.12] * 4 + [0.05] * 2, dtype=torch.float64)
        probs[0, 0, prompt, prompt] = 0.3
        nxt = (prompt + 1) % 4
        probs[0, 1, prompt, prompt], probs[0, 1, prompt, nxt] = 0.9, 0.1
        final = 0.7 if prompt < 3 else 0.3
        probs[0, 2, prompt, prompt], probs[0, 2, prompt, nxt] = final, 1 - final
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 3, 4, dtype=torch.float64))
    return SimpleNamespace(history=SimpleNamespace(probs=probs), pairs=PAIRS)


def test_mass_moves_by_hand():
    moves = mass_moves(fake_run())
    assert moves.peak_step == [1]  # mean π(i|i): 0.3, 0.9, 0.6
    # reference → final: own chosen (0.4·3 + 0)/4, own rejected -0.12, other chosen (0.18·3 + 0.58)/4,
    # other rejected -0.36, unseen -0.10; the argmax of the reference is the own chosen (0.3 > 0.12)
    assert moves.to_final[0].tolist() == pytest.approx([0.3, -0.12, 0.28, -0.36, -0.10, 0.3])
    assert float(moves.to_final[0, :5].sum()) == pytest.approx(0.0, abs=1e-12)
    # peak → final: own chosen (-0.2·3 - 0.6)/4, all of it to the other chosen
    assert moves.after_peak[0].tolist() == pytest.approx([-0.3, 0.0, 0.3, 0.0, 0.0, -0.3])
    assert moves.reference_argmax == [["own chosen"] * 4]
    assert moves.final_argmax == [["own chosen"] * 3 + ["other chosen"]]


def test_mass_table_cells():
    row = {
        "scenario": "1",
        "loss_name": "dpo",
        "mass_change": dict(zip((*MASS_CLASSES, "argmax"), [0.3, -0.12, 0.28, -0.36, -0.1, 0.3], strict=True)),
        "mass_change_after_peak": dict(zip((*MASS_CLASSES, "argmax"), [-0.3, 0, 0.3, 0, 0, -0.3], strict=True)),
        "reference_argmax_class": ["own chosen"] * 4,
        "final_argmax_class": ["own chosen"] * 3 + ["other chosen"],
    }
    header, rule, line = mass_markdown([row]).splitlines()
    assert header.startswith("| scenario | loss | own chosen | own rejected | other chosen |")
    assert line == (
        "| 1 | dpo | +0.30 / -0.30 | -0.12 / +0.00 | +0.28 / +0.30 | -0.36 / +0.00 | -0.10 / +0.00 "
        "| own-ch×4: +0.30 / -0.30 | own-ch×3, oth-ch×1 |"
    )


def test_the_four_shares_by_hand():
    probs = fake_run().history.probs
    shares = mass_shares(probs)  # (1, 3, prompts, shares)
    assert SHARES == ("own chosen", "rejected", "other chosen", "unseen")
    # reference: own chosen 0.3, rejected 4 × 0.12, other chosen 3 × 0.04, unseen 2 × 0.05
    assert shares[0, 0, 0].tolist() == pytest.approx([0.30, 0.48, 0.12, 0.10])
    # last step, prompt 4: chosen 0.3, response 1 (another prompt's chosen) 0.7
    assert shares[0, 2, 3].tolist() == pytest.approx([0.30, 0.0, 0.70, 0.0])
    torch.testing.assert_close(shares.sum(-1), torch.ones(1, 3, 4, dtype=torch.float64))


def test_the_four_shares_partition_and_sum_to_1_on_a_trained_run():
    from dpo3d.toy.scenarios import SCENARIOS
    from dpo3d.toy.train import ToyConfig, run_toy

    masks = share_masks()
    assert (masks.sum(0) == 1).all()  # every response in exactly one share, for every prompt
    assert masks.sum(-1).T.tolist() == [[1, 4, 3, 2]] * 4
    assert masks[3].nonzero()[:, 1].unique().tolist() == [8, 9]  # the unseen share is responses 9-10 only
    result = run_toy(ToyConfig(scenarios=(SCENARIOS["1"],), steps=20, sft_steps=50))
    shares = mass_shares(result.history.probs)
    torch.testing.assert_close(shares.sum(-1), torch.ones(1, 21, 4, dtype=torch.float64), rtol=0, atol=1e-12)
