"""dpo3d's losses against TRL's own values on fixed per-token log-probs (issue 14, item 1).

The numbers below were computed ONCE with TRL 1.16.0 (``DPOTrainer._compute_loss`` driven by a
stand-in model that returns the per-token log-probs of the grid below, in float32, and
``trl.experimental`` CPOTrainer.cpo_loss / ORPOTrainer.odds_ratio_loss); TRL is not imported
here. TRL reports the batch mean; dpo3d's per-pair losses are averaged to compare.

    policy     A: chosen [-0.5, -1.5]            rejected [-1, -0.5, -1, -0.5]
               B: chosen [-1, -0.5, -1, -0.5, -1] rejected [-2, -1.5]
    reference  A: chosen [-1, -1.5]              rejected [-0.5, -0.5, -1, -0.5]
               B: chosen [-0.5, -0.5, -0.5, -0.5, -1] rejected [-1.5, -2]
    log Σ_v π(v)² (WPO): -0.3 at every chosen token, -0.6 at every rejected token

These are test_losses_by_hand.py's two pairs (sums -2, -3, -2.5, -2.5 and -4, -3.5, -3, -3.5).
"""

from __future__ import annotations

import pytest
import torch

from dpo3d.losses import PreferenceBatch, compute_loss

# TRL 1.16.0, float32; key: TRL's loss_type (and option) -> batch loss
TRL = {
    "sigmoid": 0.6943966746330261,
    "aot": 0.6934596300125122,
    "aot_unpaired": 0.6934596300125122,
    "aot_ls0.1_beta0.5": 0.700939416885376,
    "discopop": 0.8305970430374146,
    "sigmoid_norm": 0.6888850927352905,
    "bco_pair": 1.3872315883636475,
    "sft": 0.8571428656578064,
    "forward_kl": 0.7125710248947144,
    "js_divergence": 0.6965466141700745,
    "alpha_divergence_0.5": 0.702011227607727,
    "ld_alpha_0.5": 0.687873363494873,
    "use_weighting": 0.20919302105903625,
    "mixture_sigmoid0.8_bco_pair0.2_sft1": 1.6901066303253174,
}
# TRL 1.16.0 trl.experimental: per pair
TRL_CPO_SIGMOID = [0.6443966600735709, 0.7184596480132863]  # CPOTrainer.cpo_loss, β = 0.1, before + cpo_alpha·NLL
TRL_ORPO_RATIO = [-0.09314947575330734, -0.022933145985007286]  # ORPOTrainer.odds_ratio_loss: β·log σ(log odds)

CASES = [
    ("dpo", {}, "sigmoid"),
    ("aot", {}, "aot"),
    ("aot-unpaired", {}, "aot_unpaired"),
    ("aot", {"beta": 0.5, "label_smoothing": 0.1}, "aot_ls0.1_beta0.5"),
    ("discopop", {}, "discopop"),
    ("sigmoid-norm", {}, "sigmoid_norm"),
    ("bco-pair", {}, "bco_pair"),
    ("fdpo-forward-kl", {}, "forward_kl"),
    ("fdpo-js", {}, "js_divergence"),
    ("fdpo-alpha", {"alpha": 0.5}, "alpha_divergence_0.5"),
    ("ld-dpo", {"ld_alpha": 0.5}, "ld_alpha_0.5"),
    ("wpo", {}, "use_weighting"),
]


def tokens(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor([sum(v) for v in values], dtype=torch.float64)


POLICY_CHOSEN = [[-0.5, -1.5], [-1.0, -0.5, -1.0, -0.5, -1.0]]
POLICY_REJECTED = [[-1.0, -0.5, -1.0, -0.5], [-2.0, -1.5]]
REFERENCE_CHOSEN = [[-1.0, -1.5], [-0.5, -0.5, -0.5, -0.5, -1.0]]
REFERENCE_REJECTED = [[-0.5, -0.5, -1.0, -0.5], [-1.5, -2.0]]


@pytest.fixture
def batch() -> PreferenceBatch:
    shared = [min(len(c), len(r)) for c, r in zip(POLICY_CHOSEN, POLICY_REJECTED, strict=True)]

    def head(rows):
        return tokens([row[:n] for row, n in zip(rows, shared, strict=True)])

    def wpo(rows, log_sum_sq):
        return torch.tensor([sum(t - log_sum_sq for t in row) / len(row) for row in rows], dtype=torch.float64)

    return PreferenceBatch(
        policy_chosen_logps=tokens(POLICY_CHOSEN),
        policy_rejected_logps=tokens(POLICY_REJECTED),
        reference_chosen_logps=tokens(REFERENCE_CHOSEN),
        reference_rejected_logps=tokens(REFERENCE_REJECTED),
        chosen_lengths=torch.tensor([2.0, 5.0], dtype=torch.float64),
        rejected_lengths=torch.tensor([4.0, 2.0], dtype=torch.float64),
        policy_chosen_shared_logps=head(POLICY_CHOSEN),
        policy_rejected_shared_logps=head(POLICY_REJECTED),
        reference_chosen_shared_logps=head(REFERENCE_CHOSEN),
        reference_rejected_shared_logps=head(REFERENCE_REJECTED),
        chosen_wpo_logweights=wpo(POLICY_CHOSEN, -0.3),
        rejected_wpo_logweights=wpo(POLICY_REJECTED, -0.6),
    )


@pytest.mark.parametrize(("name", "hyper", "trl_key"), CASES, ids=[case[2] for case in CASES])
def test_equals_trl(batch, name, hyper, trl_key):
    assert compute_loss(name, batch, **hyper).loss.item() == pytest.approx(TRL[trl_key], rel=2e-7)


def test_sft_differs_from_trl_only_by_averaging_per_pair(batch):
    # TRL averages the NLL over all chosen tokens of the batch: (2 + 4)/(2 + 5) = 6/7;
    # dpo3d averages per pair, then over pairs: (2/2 + 4/5)/2 = 0.9. Weighting dpo3d's pairs by
    # their chosen lengths gives TRL's value back.
    ours = compute_loss("sft", batch).losses
    assert TRL["sft"] == pytest.approx(6 / 7, rel=2e-7)
    assert ours.mean().item() == pytest.approx(0.9, rel=1e-12)
    lengths = batch.chosen_lengths
    assert ((ours * lengths).sum() / lengths.sum()).item() == pytest.approx(TRL["sft"], rel=2e-7)


def test_mixture_equals_trl_up_to_the_sft_average(batch):
    # TRL: loss_type = ["sigmoid", "bco_pair", "sft"], loss_weights = [0.8, 0.2, 1.0]
    ours = compute_loss("dpo:0.8,bco-pair:0.2,sft:1", batch).loss.item()
    assert ours - 0.9 == pytest.approx(TRL["mixture_sigmoid0.8_bco_pair0.2_sft1"] - TRL["sft"], rel=1e-6)


def test_cpo_equals_trl(batch):
    # TRL's CPO loss = mean(cpo_loss) + cpo_alpha·NLL; dpo3d's per pair = the same preference term + α·NLL_pair
    nll = (-batch.policy_chosen_logps / batch.chosen_lengths).tolist()
    ours = compute_loss("cpo", batch, sft_weight=1.0).losses.tolist()
    assert [o - n for o, n in zip(ours, nll, strict=True)] == pytest.approx(TRL_CPO_SIGMOID, rel=1e-12)


def test_orpo_equals_trl(batch):
    # TRL's ORPO loss = NLL - mean(β·log σ(log odds)); dpo3d's per pair = NLL_pair - β·log σ(log odds)
    nll = (-batch.policy_chosen_logps / batch.chosen_lengths).tolist()
    ours = compute_loss("orpo", batch, beta=0.1).losses.tolist()
    assert [n - o for o, n in zip(ours, nll, strict=True)] == pytest.approx(TRL_ORPO_RATIO, rel=1e-7)


# TRL 1.16.0 KTOTrainer._compute_loss (loss_type kto, β = 0.1), float32, driven once by a stand-in model that
# returns the per-token log-probs of the grid above for the four examples [chosen A, chosen B, rejected A,
# rejected B] (labels True, True, False, False), with the KL completions set to the examples' own, so TRL's
# z0 = max(0, mean of the four log-ratios) is the one dpo3d's kto computes. TRL averages its 2n per-example
# losses; dpo3d sums a pair's two terms, then averages over the n pairs: twice TRL's number.
TRL_KTO = {
    "grid": 0.4999961256980896,  # z0: mean(0.5, -1, -0.5, 0) = -0.25, clamped to 0 (TRL's logged kl: 0.0)
    "grid_weights_2_0.5": 0.6296787858009338,  # desirable_weight 2, undesirable_weight 0.5
    "raised": 0.4875045418739319,  # pair B's chosen tokens [-0.5, -0.5, -0.5, -0.25, -0.25]: a_B = 1, z0 = 0.25
}


@pytest.mark.parametrize(
    ("key", "hyper", "raise_b"),
    [("grid", {}, False), ("grid_weights_2_0.5", {"desirable_weight": 2.0, "undesirable_weight": 0.5}, False),
     ("raised", {}, True)],
)  # fmt: skip
def test_kto_equals_trl_for_the_same_reference_point(batch, key, hyper, raise_b):
    if raise_b:
        from dataclasses import replace

        batch = replace(batch, policy_chosen_logps=tokens([POLICY_CHOSEN[0], [-0.5, -0.5, -0.5, -0.25, -0.25]]))
    ours = compute_loss("kto", batch, **hyper).loss.item()
    # TRL's value is float32 (relative round-off 6e-8 per operation, a few operations deep), ours float64
    assert ours / 2 == pytest.approx(TRL_KTO[key], rel=2e-7)
