"""CHES (Razin et al. 2025, Def. 2): worked by hand from a tiny model's hidden states, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dpo3d.data.sequences import encode_pair
from dpo3d.scoring.ches import ches_from_sums, ches_records, highest_ches
from dpo3d_cli.app import app

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples" / "pairs.jsonl"
runner = CliRunner()

PAIRS = [
    {"id": "a", "prompt": [{"role": "user", "content": "What is 2 + 3?"}], "chosen": "2 + 3 = 5. The answer is 5.", "rejected": "It is 6."},
    {"id": "b", "prompt": "Name a colour:", "chosen": " red", "rejected": " a shade of blue, like the sky at noon"},
    {"id": "c", "prompt": [{"role": "user", "content": "Say hi."}], "chosen": "Hi!", "rejected": "Hi!"},
]


def by_hand(model, tokenizer, record: dict) -> tuple[float, float]:
    """CHES and its normalised form from plain single-sequence forwards, with explicit sums."""
    sums, lengths = [], []
    for side in ("chosen", "rejected"):
        encoded = encode_pair(tokenizer, record["prompt"], record[side])
        ids = torch.tensor([encoded.prompt_ids + encoded.response_ids])
        with torch.no_grad():
            outputs = model(input_ids=ids, output_hidden_states=True)
        hidden = outputs.hidden_states[-1][0].double()
        # the hidden states the LM head turns into the logits (after the final norm)
        assert torch.allclose(model.lm_head(hidden.float()), outputs.logits[0], atol=1e-5)
        prompt_len, total = len(encoded.prompt_ids), ids.shape[1]
        # h(x, y<k) for k = 1..|y|: positions prompt_len-1 (the last prompt token) .. total-2
        positions = range(prompt_len - 1, total - 1)
        assert len(positions) == len(encoded.response_ids)
        summed = torch.zeros(hidden.shape[1], dtype=torch.float64)
        for t in positions:
            summed += hidden[t]
        sums.append(summed)
        lengths.append(len(positions))
    chosen, rejected = sums
    ches = float(chosen @ rejected - chosen @ chosen)
    chosen_mean, rejected_mean = chosen / lengths[0], rejected / lengths[1]
    return ches, float(chosen_mean @ rejected_mean - chosen_mean @ chosen_mean)


def test_ches_from_sums_worked_by_hand():
    # H⁺ = (1, 2), H⁻ = (3, 0), |y⁺| = 2, |y⁻| = 3
    scores = ches_from_sums(torch.tensor([[1.0, 2.0]]), torch.tensor([2.0]), torch.tensor([[3.0, 0.0]]), torch.tensor([3.0]))
    assert float(scores.ches[0]) == pytest.approx(3 - 5)  # ⟨H⁺, H⁻⟩ − ‖H⁺‖²
    assert float(scores.normalized[0]) == pytest.approx(0.5 * 1 + 1 * 0 - (0.25 + 1))  # with H⁺/2, H⁻/3


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_ches_of_a_tiny_model_matches_its_hidden_states_by_hand(tiny_model, tokenizer, padding_side, monkeypatch):
    monkeypatch.setattr(tokenizer, "padding_side", padding_side)
    scores = ches_records(tiny_model, tokenizer, PAIRS, batch_size=3)  # one padded batch of 3 pairs
    for record, score in zip(PAIRS, scores, strict=True):
        ches, normalized = by_hand(tiny_model, tokenizer, record)
        assert score["ches"] == pytest.approx(ches, rel=1e-5, abs=1e-5)
        assert score["ches_normalized"] == pytest.approx(normalized, rel=1e-5, abs=1e-5)
    assert scores[2]["ches"] == pytest.approx(0, abs=1e-3)  # identical responses: ⟨H, H⟩ − ‖H‖² = 0
    assert scores[0]["ches"] != pytest.approx(0, abs=1e-3)


def test_left_and_right_padding_agree_across_batch_sizes(tiny_model, tokenizer, monkeypatch):
    right = ches_records(tiny_model, tokenizer, PAIRS, batch_size=3)
    monkeypatch.setattr(tokenizer, "padding_side", "left")
    left = ches_records(tiny_model, tokenizer, PAIRS, batch_size=2)
    for a, b in zip(right, left, strict=True):
        assert a["ches"] == pytest.approx(b["ches"], rel=1e-5, abs=1e-5)
        assert a["ches_normalized"] == pytest.approx(b["ches_normalized"], rel=1e-5, abs=1e-5)


def test_ches_and_the_log_probs_come_from_one_forward_per_batch(tiny_model, tokenizer):
    from dpo3d.scoring.logprobs import score_records

    plain = score_records(tiny_model, tokenizer, PAIRS, batch_size=3)  # also settles the once-per-model probes
    calls: list[int] = []
    hook = tiny_model.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        both = ches_records(tiny_model, tokenizer, PAIRS, batch_size=3, with_logprobs=True)
    finally:
        hook.remove()
    assert len(calls) == 1  # 3 pairs, one batch: one forward for CHES and the log-probs together
    for record, score, logps in zip(PAIRS, both, plain, strict=True):
        assert list(score) == [*logps, "ches", "ches_normalized"]
        for key, value in logps.items():
            assert score[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
        ches, normalized = by_hand(tiny_model, tokenizer, record)
        assert score["ches"] == pytest.approx(ches, rel=1e-5, abs=1e-5)
        assert score["ches_normalized"] == pytest.approx(normalized, rel=1e-5, abs=1e-5)


def test_ches_refuses_completions(tiny_model, tokenizer):
    with pytest.raises(ValueError, match="the record with id 'x' is not a pair"):
        ches_records(tiny_model, tokenizer, [PAIRS[0], {"id": "x", "prompt": "p", "completion": "c"}])


@pytest.mark.parametrize(
    "fraction, dropped",
    [(0.0, set()), (0.2, {1}), (0.5, {1, 2}), (0.6, {1, 2, 4}), (0.99, {0, 1, 2, 4})],
)
def test_highest_ches_drops_the_top_share_ties_in_order(fraction, dropped):
    scores = [0.5, 2.0, 2.0, -1.0, 2.0]  # ⌊fraction·5⌋ dropped; the three tied 2.0s go in index order
    assert highest_ches(scores, fraction) == dropped


def test_highest_ches_counts_without_float_surprises():
    assert len(highest_ches([float(i) for i in range(10)], 0.3)) == 3  # 0.3·10 is 3.0000000000000004


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_highest_ches_rejects_a_share_out_of_range(fraction):
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        highest_ches([1.0, 2.0], fraction)


def run(*args: str):
    return runner.invoke(app, list(args))


def test_cli_adds_ches_to_each_pair(tmp_path, tiny_model_dir, tiny_model, tokenizer):
    out = tmp_path / "scored.jsonl"
    result = run("logprobs", str(EXAMPLES), "--model", str(tiny_model_dir), "--ches", "-o", str(out), "-b", "4")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    source = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    expected = ches_records(tiny_model, tokenizer, source)
    assert len(rows) == len(source) == 12
    for row, want in zip(rows, expected, strict=True):
        assert "chosen_logp" in row  # the log-probs are still there
        assert row["ches"] == pytest.approx(want["ches"], rel=1e-5, abs=1e-5)
        assert row["ches_normalized"] == pytest.approx(want["ches_normalized"], rel=1e-5, abs=1e-5)


def test_cli_drops_the_highest_ches_share(tmp_path, tiny_model_dir, tiny_model, tokenizer):
    out = tmp_path / "kept.jsonl"
    result = run("logprobs", str(EXAMPLES), "--model", str(tiny_model_dir), "--drop-highest-ches", "0.25", "-o", str(out))
    assert result.exit_code == 0, result.output
    source = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    normalized = [score["ches_normalized"] for score in ches_records(tiny_model, tokenizer, source)]
    top3 = sorted(range(12), key=lambda i: -normalized[i])[:3]
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in kept] == [record["id"] for i, record in enumerate(source) if i not in top3]
    assert all("ches_normalized" in row for row in kept)
    assert "dropped 3 of 12 pairs" in result.output


@pytest.mark.parametrize("fraction", ["1", "-0.5"])
def test_cli_share_out_of_range_is_a_clear_error(tmp_path, tiny_model_dir, fraction):
    out = tmp_path / "kept.jsonl"
    result = run("logprobs", str(EXAMPLES), "--model", str(tiny_model_dir), "--drop-highest-ches", fraction, "-o", str(out))
    assert result.exit_code == 2 and "--drop-highest-ches must be a share in [0, 1)" in result.output
    assert not out.exists()


def test_cli_ches_on_completions_is_a_clear_error(tmp_path, tiny_model_dir):
    data = tmp_path / "completions.jsonl"
    data.write_text(json.dumps({"id": "q1", "prompt": "Say hi.", "completion": "hi"}) + "\n")
    out = tmp_path / "out.jsonl"
    result = run("logprobs", str(data), "--model", str(tiny_model_dir), "--ches", "-o", str(out))
    assert result.exit_code == 2 and "CHES needs preference pairs" in result.output and "'q1'" in result.output
    assert "Traceback" not in result.output and not out.exists()
