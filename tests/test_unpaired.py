"""Unpaired preference data ({prompt, completion, label}, TRL's format for KTO) read as pairs for the kto loss."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dpo3d.data import formats
from dpo3d.data.records import RecordError
from dpo3d.data.sequences import encode_pair
from dpo3d.pairs.pair_set import load_pairs
from dpo3d.pairs.unpaired import unpaired_as_pairs
from dpo3d_cli.app import app

EXAMPLES = [
    {"prompt": "2+2?", "completion": "4", "label": True},
    {"prompt": "3+3?", "completion": "7", "label": False},
    {"prompt": "5+5?", "completion": "10", "label": True},
    {"prompt": "1+1?", "completion": "2", "label": True},
]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_unpaired_format_is_checked():
    assert formats.as_pair_or_unpaired(dict(EXAMPLES[0])) == EXAMPLES[0]
    assert formats.is_unpaired(EXAMPLES[0]) and not formats.is_unpaired({"prompt": "p", "chosen": "a", "rejected": "b"})
    with pytest.raises(RecordError, match="'label' should be true"):
        formats.as_pair_or_unpaired({"prompt": "p", "completion": "c", "label": "yes"}, "x.jsonl", 3)
    with pytest.raises(RecordError, match="missing field 'completion'"):
        formats.as_pair_or_unpaired({"prompt": "p", "label": True}, "x.jsonl", 3)
    # a pair keeps its own check and message
    with pytest.raises(RecordError, match="missing field 'rejected'"):
        formats.as_pair_or_unpaired({"prompt": "p", "chosen": "a"}, "x.jsonl", 3)


def test_desirable_and_undesirable_examples_are_paired_in_order_and_the_shorter_side_cycles():
    records = [{**r, "id": f"e{i}"} for i, r in enumerate(EXAMPLES)]
    pairs = unpaired_as_pairs(records, "x.jsonl")
    # three desirable (e0, e2, e3), one undesirable (e1): three pairs, e1 in each
    assert [p["id"] for p in pairs] == ["e0+e1", "e2+e1", "e3+e1"]
    assert [(p["prompt"], p["chosen"], p["rejected_prompt"], p["rejected"]) for p in pairs] == [
        ("2+2?", "4", "3+3?", "7"), ("5+5?", "10", "3+3?", "7"), ("1+1?", "2", "3+3?", "7"),
    ]  # fmt: skip
    with pytest.raises(RecordError, match="no undesirable"):
        unpaired_as_pairs([records[0], records[2]], "x.jsonl")
    with pytest.raises(RecordError, match="mixes preference pairs"):
        unpaired_as_pairs([records[0], {"id": "p", "prompt": "p", "chosen": "a", "rejected": "b"}], "x.jsonl")


def test_load_pairs_encodes_each_side_with_its_own_prompt(tmp_path, tokenizer):
    data = load_pairs(write(tmp_path / "kto.jsonl", EXAMPLES), tokenizer, 64, cache=None)
    assert len(data) == 3 and data.unseen == []
    assert data.chosen[1] == encode_pair(tokenizer, "5+5?", "10", 64)
    # the undesirable answers its own prompt (3+3?), not the desirable's
    assert data.rejected[1] == encode_pair(tokenizer, "3+3?", "7", 64)
    assert data.rejected[1] != encode_pair(tokenizer, "5+5?", "7", 64)


def test_train_dpo_trains_kto_on_an_unpaired_file(tmp_path, tiny_model_dir):
    data = write(tmp_path / "kto.jsonl", [{**r, "prompt": f"{r['prompt']} ({i})"} for i, r in enumerate(EXAMPLES * 2)])
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train-dpo", "--pairs", str(data), "--model", str(tiny_model_dir), "--out", str(out), "--loss", "kto",
        "--max-steps", "1", "--batch-size", "2", "--grad-accum", "1", "--probe-size", "2",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run_config.json").read_text())["extra"]["loss"] == "kto"


def test_train_dpo_refuses_a_contrastive_loss_on_an_unpaired_file(tmp_path, tiny_model_dir):
    """dpo on unpaired examples would compare answers to two different prompts: one line naming the file."""
    data = write(tmp_path / "kto.jsonl", EXAMPLES)
    for loss in ("dpo", "kto:1,dpo:1"):
        result = CliRunner().invoke(app, [
            "train-dpo", "--pairs", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / loss),
            "--loss", loss, "--max-steps", "1", "--no-probe-greedy", "--probe-samples", "0",
        ])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert str(data) in result.output and "use kto" in result.output, result.output
        assert not (tmp_path / loss / "metrics.jsonl").exists()
