"""Minimal-edit pairs: the reference solution against itself with only the final answer changed."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from cli.app import app
from dpo3d.pairs.minimal_edit import (
    MISMATCH,
    NO_ANSWER,
    NO_SOLUTION,
    NOT_A_NUMBER,
    MinimalEditConfig,
    Skipped,
    build_edit_pairs,
    locate_answer,
    minimal_edit_pair,
)

runner = CliRunner()

PROMPT = [{"role": "user", "content": "Solve it."}]


def record(id_, reference, answer, **extra):
    return {"id": id_, "prompt": PROMPT, "question": "Q?", "reference": reference, "answer": answer, "meta": {}, **extra}


def boxed(steps: str, answer: str) -> str:
    # the shape of a built-in's reference (see dpo3d.data.datasets.gsm8k_reference)
    return f"{steps}\nThe answer is $\\boxed{{{answer}}}$."


INTEGER = record("int", boxed("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips in all.", "72"), "72")
DECIMAL = record("dec", boxed("Each costs 5/2 = 2.5 dollars.", "2.5"), "2.5")
NEGATIVE = record("neg", boxed("The change is 3 - 10 = -7 degrees.", "-7"), "-7")
# a raw GSM8K solution: calculator notes kept, the answer after ####, with a thousands separator
COMMAS = record("raw", "He earns 12*90 = <<12*90=1080>>1080 dollars.\n#### 1,080", "1080")


def differ_only_at_answer(pair: dict) -> None:
    """chosen and rejected agree on everything but the answer span, which holds answer / edited_answer."""
    chosen, rejected = pair["chosen"], pair["rejected"]
    start, end = pair["answer_span"]
    assert chosen[start:end] != pair["edited_answer"]
    assert rejected[:start] == chosen[:start]
    assert rejected[start:start + len(pair["edited_answer"])] == pair["edited_answer"]
    assert rejected[start + len(pair["edited_answer"]):] == chosen[end:]


@pytest.mark.parametrize("source", [INTEGER, DECIMAL, NEGATIVE, COMMAS])
def test_chosen_is_the_reference_and_rejected_changes_only_the_answer(source):
    pair = minimal_edit_pair(source, MinimalEditConfig(seed=0))
    assert pair["chosen"] == source["reference"]
    assert pair["prompt"] == PROMPT and pair["id"] == source["id"]
    assert pair["answer"] == source["answer"]
    differ_only_at_answer(pair)
    shift = Decimal(pair["edited_answer"].replace(",", "")) - Decimal(source["answer"])
    assert shift != 0 and abs(shift) <= 9 and shift == shift.to_integral_value()


def test_only_the_boxed_answer_changes_not_the_same_number_in_the_working():
    pair = minimal_edit_pair(INTEGER, MinimalEditConfig(seed=0))
    assert pair["rejected"].startswith("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips in all.\n")
    assert pair["rejected"].endswith(f"The answer is $\\boxed{{{pair['edited_answer']}}}$.")
    start, end = pair["answer_span"]
    assert pair["chosen"][start:end] == "72" and pair["chosen"][:start].endswith("\\boxed{")


def test_the_answer_keeps_its_format():
    for seed in range(40):
        config = MinimalEditConfig(seed=seed)
        assert re.fullmatch(r"\d+", minimal_edit_pair(INTEGER, config)["edited_answer"])
        assert re.fullmatch(r"\d+\.\d", minimal_edit_pair(DECIMAL, config)["edited_answer"])
        assert re.fullmatch(r"-\d+", minimal_edit_pair(NEGATIVE, config)["edited_answer"])
        assert re.fullmatch(r"\d,\d{3}", minimal_edit_pair(COMMAS, config)["edited_answer"])


def test_small_answers_never_change_sign_and_never_stay_equal():
    small = [record(f"s{n}", boxed("Work.", n), n) for n in ("0", "1", "2", "0.5", "-1", "-2", "-0.5")]
    for seed in range(30):
        for source in small:
            edited = Decimal(minimal_edit_pair(source, MinimalEditConfig(seed=seed))["edited_answer"])
            true = Decimal(source["answer"])
            assert edited != true
            assert (edited < 0) == (true < 0), (source["answer"], edited)


def test_the_same_seed_gives_the_same_pairs_and_other_seeds_other_edits():
    sources = [record(f"r{i}", boxed(f"Step {i}.", str(100 + i)), str(100 + i)) for i in range(20)]
    first, _ = build_edit_pairs(sources, MinimalEditConfig(seed=1))
    again, _ = build_edit_pairs(sources, MinimalEditConfig(seed=1))
    other, _ = build_edit_pairs(sources, MinimalEditConfig(seed=2))
    assert first == again
    assert [p["edited_answer"] for p in first] != [p["edited_answer"] for p in other]
    # an edit depends on the record and the seed, not on which other records came along
    alone, _ = build_edit_pairs(sources[5:6], MinimalEditConfig(seed=1))
    assert alone == first[5:6]


def test_max_shift_bounds_the_change():
    for seed in range(20):
        pair = minimal_edit_pair(INTEGER, MinimalEditConfig(seed=seed, max_shift=1))
        assert pair["edited_answer"] in {"71", "73"}
    with pytest.raises(ValueError, match="max_shift"):
        MinimalEditConfig(max_shift=0)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (record("none", None, "3"), NO_SOLUTION),
        (record("plain", "She has 3 apples, so 3.", "3"), NO_ANSWER),
        (record("frac", boxed("Halve it.", "\\frac{1}{2}"), "\\frac{1}{2}"), NOT_A_NUMBER),
        (record("other", boxed("So 5 + 2 = 7.", "7"), "8"), MISMATCH),
    ],
)
def test_records_without_a_usable_answer_are_skipped_with_their_reason(source, reason):
    with pytest.raises(Skipped) as err:
        minimal_edit_pair(source, MinimalEditConfig())
    assert err.value.reason == reason
    pairs, stats = build_edit_pairs([INTEGER, source, DECIMAL], MinimalEditConfig())
    assert [p["id"] for p in pairs] == ["int", "dec"]
    assert (stats.read, stats.kept, dict(stats.skipped)) == (3, 2, {reason: 1})


def test_the_last_answer_counts_and_a_missing_answer_field_takes_the_located_one():
    text = "A first try: $\\boxed{4}$. No: 4 + 1 = 5.\n#### 5"
    span = locate_answer(text)
    assert (span.text, text[span.start:span.end]) == ("5", "5") and span.start == len(text) - 1
    pair = minimal_edit_pair({"id": "x", "prompt": "Q?", "reference": text}, MinimalEditConfig())
    assert pair["answer"] == "5" and pair["rejected"].startswith("A first try: $\\boxed{4}$. No: 4 + 1 = 5.\n#### ")
    assert locate_answer("no answer here") is None


def test_unknown_fields_pass_through():
    pair = minimal_edit_pair(record("int2", INTEGER["reference"], "72", level=3), MinimalEditConfig())
    assert pair["level"] == 3 and pair["meta"] == {} and pair["question"] == "Q?"


# --------------------------------------------------------------------------- the command


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_command_writes_pairs_train_dpo_reads_and_the_tally_on_stderr(tmp_path, tiny_model_dir, tokenizer):
    from dpo3d.pairs.pair_set import load_pairs

    sources = [INTEGER, DECIMAL, NEGATIVE, COMMAS, record("plain", "No answer.", "3")]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", sources)
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(app, ["edit-pairs", str(prompts), "--seed", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in pairs] == ["int", "dec", "neg", "raw"]
    assert pairs == build_edit_pairs(sources, MinimalEditConfig(seed=3))[0]
    for pair in pairs:
        assert {"id", "prompt", "chosen", "rejected", "answer", "edited_answer"} <= set(pair)
        differ_only_at_answer(pair)
    assert re.search(r"read 5\b.*kept 4\b.*skipped 1\b", result.output, re.S)
    assert NO_ANSWER in result.output

    loaded = load_pairs(out, tokenizer, max_length=256, cache=None)
    assert len(loaded) == 4
    for chosen, rejected in zip(loaded.chosen, loaded.rejected, strict=True):
        assert chosen.response_ids != rejected.response_ids

    run = tmp_path / "run"
    result = runner.invoke(app, ["train-dpo", "--pairs", str(out), "--model", str(tiny_model_dir), "--out", str(run),
                                 "--max-steps", "1", "--batch-size", "2", "--grad-accum", "1", "--probe-size", "2",
                                 "--probe-new-tokens", "8"])
    assert result.exit_code == 0, result.output
    assert (run / "metrics.jsonl").is_file()


def test_the_command_reads_a_builtin_with_limit(tmp_path):
    out = tmp_path / "gsm8k.jsonl"
    result = runner.invoke(app, ["edit-pairs", "gsm8k:train", "--limit", "6", "--seed", "0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    pairs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in pairs] == [f"gsm8k-train-{i}" for i in range(6)]
    for pair in pairs:
        differ_only_at_answer(pair)
        assert pair["chosen"] == pair["reference"] and isinstance(pair["prompt"], list)


def test_the_command_writes_nothing_when_no_record_has_an_answer(tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [record("plain", "No answer.", "3")])
    out = tmp_path / "pairs.jsonl"
    result = runner.invoke(app, ["edit-pairs", str(prompts), "-o", str(out)])
    assert result.exit_code == 2 and "no pair" in result.output
    assert not out.exists()
