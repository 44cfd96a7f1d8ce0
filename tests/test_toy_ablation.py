"""The mechanism ablation (dpo3d.toy.ablation): each variant removes what it says, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dpo3d.toy.ablation import (
    SGD,
    AblationConfig,
    TabularLogits,
    ablation_groups,
    ablation_markdown,
    per_seed_numbers,
    run_ablation,
    train_dpo,
)
from dpo3d.toy.indicators import curves
from dpo3d.toy.model import ToyMLP
from dpo3d.toy.scenarios import CHOSEN, N_PROMPTS, SCENARIOS, draw_pairs
from dpo3d.toy.train import ToyConfig, run_toy


def prompts_touching(model) -> list[set[tuple[int, int]]]:
    """For each prompt, the (tensor, entry) pairs of the parameters its logits depend on (non-zero gradient)."""
    touched = []
    for prompt in range(N_PROMPTS):
        # a random direction, so that no entry's gradient cancels by accident
        direction = torch.randn(model.logits()[:, prompt].shape, generator=torch.Generator().manual_seed(prompt), dtype=torch.float64)
        grads = torch.autograd.grad((model.logits()[:, prompt] * direction).sum(), model.weights)
        touched.append({(t, int(i)) for t, g in enumerate(grads) for i in g.flatten().nonzero().flatten()})
    return touched


def test_the_logit_table_shares_no_parameter_between_prompts_and_the_mlp_does():
    reference = torch.log_softmax(torch.randn(2, 4, 10, dtype=torch.float64), -1)
    table = prompts_touching(TabularLogits.from_log_probs(reference))
    assert all(len(t) == 2 * 10 for t in table)  # its own 10 logits, in each of the 2 runs
    for a in range(N_PROMPTS):
        for b in range(a + 1, N_PROMPTS):
            assert not table[a] & table[b]
    mlp = prompts_touching(ToyMLP.init(2, 8, seed=0))
    assert mlp[0] & mlp[1]  # the same check finds the MLP's shared weights


def test_sgd_is_param_minus_lr_times_grad():
    param = torch.tensor([1.0, -2.0], dtype=torch.float64)
    SGD([param], lr=0.1).step([torch.tensor([0.5, -1.0], dtype=torch.float64)])
    assert param.tolist() == pytest.approx([0.95, -1.9])


def test_one_sgd_step_on_the_table_moves_only_the_pair_s_two_logits():
    # DPO on a softmax's logits: ∂L/∂z = -β·σ(-h)·(e_w - e_l), the softmax terms cancel; at h = 0, σ = 1/2
    reference = SCENARIOS["1"].tensor().log()[None]
    table = TabularLogits.from_log_probs(reference)
    mask = torch.tensor([[1.0, 0.0, 0.0, 0.0]])  # prompt 1's pair alone
    trace = train_dpo(table, reference, mask, SGD(table.weights, lr=1.0), steps=1, beta=0.1, seed=0)
    moved = (table.weights[0].detach() - reference)[0]
    rejected = draw_pairs(1, "random", 0).rejected[0]
    expected = torch.zeros(4, 10, dtype=torch.float64)
    expected[0, CHOSEN[0]], expected[0, rejected] = 0.05, -0.05
    torch.testing.assert_close(moved, expected, rtol=0, atol=1e-15)
    # step 0: x1 = 0.3, so log|∂L/∂x1| = log(β·σ(0)/x1) = log(0.05/0.3); x2 = 0.12
    assert float(trace.log_grad_chosen[0, 0]) == pytest.approx(math.log(0.05 / 0.3))
    assert float(trace.log_x2[0, 0]) == pytest.approx(math.log(0.12))
    assert float(trace.chosen[0, 0]) == pytest.approx(0.3)


def test_the_default_variant_is_run_toy_s_dpo():
    config = AblationConfig(scenarios=(SCENARIOS["1"], SCENARIOS["3"]), variants=("default",), seeds=(2,), steps=25, sft_steps=60)
    trace = run_ablation(config)[2]["default"]
    toy = run_toy(ToyConfig(scenarios=config.scenarios, steps=25, sft_steps=60, seed=2))
    torch.testing.assert_close(trace.chosen, curves(toy).chosen, rtol=0, atol=1e-12)
    torch.testing.assert_close(trace.log_x2, curves(toy).rejected_logp, rtol=0, atol=1e-12)
    torch.testing.assert_close(trace.log_grad_chosen, curves(toy).log_grad_chosen, rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def mechanism():
    config = AblationConfig(scenarios=(SCENARIOS["1"], SCENARIOS["3"]), variants=("default", "alone", "tabular"), seeds=(0,))
    return {(row["scenario"], row["variant"]): row for row in per_seed_numbers(config, run_ablation(config))}


def test_prompts_trained_alone_reach_x2_near_0_and_do_not_degrade(mechanism):
    # the paper's Corollary 2: ∂L/∂x1 → 0 as x2 → 0. Trained alone, x2 goes below 1e-20 and |∂L/∂x1| below
    # 1e-3, yet the chosen stays at its peak; with the four prompts together (same MLP, same Adam) it falls
    for scenario in "13":
        alone, default = mechanism[scenario, "alone"], mechanism[scenario, "default"]
        assert alone["log10_x2_final"] < -20 and alone["log10_grad_chosen_final"] < -3
        assert alone["final_chosen"] > 0.99 and alone["post_peak_fall"] < 0.01
        assert default["log10_x2_final"] < -20
        assert default["post_peak_fall"] > 0.1


def test_the_logit_table_reaches_x2_near_0_and_its_chosen_never_falls(mechanism):
    for scenario in "13":
        tabular = mechanism[scenario, "tabular"]
        assert tabular["log10_x2_final"] < -20
        assert tabular["post_peak_fall"] == 0.0 and tabular["peak_step"] == 1000


def test_ablation_table_is_mean_and_sd_over_seeds():
    config = AblationConfig(scenarios=(SCENARIOS["3"],), variants=("default", "sgd"), seeds=(0, 1, 2), steps=40, sft_steps=60)
    results = run_ablation(config)
    groups = ablation_groups(config, results)
    assert [(g["scenario"], g["variant"]) for g in groups] == [("3", "default"), ("3", "sgd")]
    for g in groups:
        values = [float(results[seed][g["variant"]].chosen[0, -1]) for seed in (0, 1, 2)]
        assert g["final_chosen"]["values"] == pytest.approx(values, rel=1e-12)
        assert g["final_chosen"]["sd"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    table = ablation_markdown(config, groups)
    assert "over 3 seeds (0, 1, 2)" in table and "| 3 | sgd |" in table
    with pytest.raises(ValueError, match="unknown ablation variant"):
        AblationConfig(variants=("adamw",)).validate()
