"""Issue 14's and issue 27's losses train on a tiny model: 3 steps each through train_dpo, and the token-level
extras (LD-DPO's shared-length split, WPO's weights) measured against direct computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dpo3d.data.run_log import read_log
from dpo3d.data.sequences import EncodedPair
from dpo3d.losses import bind_loss
from dpo3d.scoring.logprobs import score_sequences
from dpo3d.scoring.pair_logps import pair_logps, pair_logps_with_extras, truncate_to_shared
from dpo3d.training.config import LoopConfig
from dpo3d.training.dpo import DPORunConfig, train_dpo
from dpo3d.watch.probe_responses import ProbeResponseConfig

NEW_LOSSES = [
    "adadpo", "bpo", "bdpo", "aot", "aot-unpaired", "discopop", "sigmoid-norm", "fdpo-forward-kl", "fdpo-js",
    "fdpo-alpha", "ld-dpo", "wpo", "bco-pair", "orpo", "cpo", "rdpo", "sft", "dpo:0.8,bco:0.2,sft:1",
    # issue 27's mitigation losses
    "cal-dpo", "simper", "beta-dpo", "epsilon-dpo", "kto",
]  # fmt: skip


def write_pairs(path: Path, n: int = 6) -> Path:
    rows = [
        {
            "prompt": f"Question {i}: pick a colour.",
            "chosen": f"Blue, number {i}.",
            "rejected": f"I refuse to answer question {i} at all, sorry.",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("loss", NEW_LOSSES)
def test_new_loss_trains_three_steps(tmp_path, tiny_model_dir, loss):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    loop = LoopConfig(out=tmp_path / "run", lr=5e-3, batch_size=2, grad_accum=1, max_steps=3, warmup_ratio=0.0,
                      schedule="constant", seed=0)  # fmt: skip
    result = train_dpo(DPORunConfig(model=str(tiny_model_dir), pairs=pairs, loop=loop, loss=bind_loss(loss), probe_size=2,
                                    probe_responses=ProbeResponseConfig(max_new_tokens=8)))
    records = read_log(result.out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    for record in records[1:]:
        assert math.isfinite(record["loss"])
        assert math.isfinite(record["logp_grad_chosen"]) and math.isfinite(record["logp_grad_rejected"])
    # the policy moved: the probe's chosen log-prob is no longer the reference's
    assert records[-1]["probe_chosen_logp_delta"] != 0
    config = json.loads((result.out / "run_config.json").read_text())["extra"]
    assert config["loss"] == loss and config["loss_source"]  # a mixture keeps its canonical name


def _pair(prompt: list[int], response: list[int]) -> EncodedPair:
    return EncodedPair(prompt, response)


@pytest.fixture
def uneven_pairs():
    # chosen of 3 and 5 tokens, rejected of 6 and 2: shared lengths 3 and 2
    chosen = [_pair([1, 2, 3], [40, 41, 42]), _pair([4, 5], [50, 51, 52, 53, 54])]
    rejected = [_pair([1, 2, 3], [60, 61, 62, 63, 64, 65]), _pair([4, 5], [70, 71])]
    return chosen, rejected


def test_shared_sums_equal_scoring_the_truncated_responses(tiny_model, uneven_pairs):
    chosen, rejected = uneven_pairs
    pad = 0
    full_chosen, full_rejected, extras = pair_logps_with_extras(tiny_model, chosen, rejected, pad, wanted=frozenset({"shared", "wpo"}))
    plain_chosen, plain_rejected = pair_logps(tiny_model, chosen, rejected, pad)
    torch.testing.assert_close(full_chosen.sum, plain_chosen.sum)
    torch.testing.assert_close(full_rejected.sum, plain_rejected.sum)
    cut_chosen, cut_rejected = truncate_to_shared(chosen, rejected)
    assert [len(c.response_ids) for c in cut_chosen] == [3, 2] and [len(r.response_ids) for r in cut_rejected] == [3, 2]
    torch.testing.assert_close(extras["chosen_shared"], score_sequences(tiny_model, cut_chosen, pad).sum, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(extras["rejected_shared"], score_sequences(tiny_model, cut_rejected, pad).sum, rtol=1e-5, atol=1e-5)
    # the second pair's rejected is itself the shared length: its shared sum is its whole sum
    assert extras["rejected_shared"][1].item() == pytest.approx(full_rejected.sum[1].item(), rel=1e-6)


def test_wpo_weights_from_the_whole_distribution(tiny_model, uneven_pairs):
    chosen, rejected = uneven_pairs
    _, _, extras = pair_logps_with_extras(tiny_model, chosen, rejected, 0, wanted=frozenset({"wpo"}))
    # by hand for the first chosen: positions 2, 3, 4 of [1, 2, 3, 40, 41, 42] predict 40, 41, 42
    ids = torch.tensor([[1, 2, 3, 40, 41, 42]])
    with torch.no_grad():
        log_probs = torch.log_softmax(tiny_model(input_ids=ids).logits[0].float(), dim=-1)
    terms = [log_probs[t, ids[0, t + 1]] - torch.logsumexp(2 * log_probs[t], dim=-1) for t in (2, 3, 4)]
    # a difference of two float32 terms of ~-10 (resolution ~1e-6): an absolute tolerance, whatever the row layout
    assert extras["chosen_wpo"][0].item() == pytest.approx(float(sum(terms) / 3), rel=1e-5, abs=5e-6)
    assert "chosen_shared" not in extras
