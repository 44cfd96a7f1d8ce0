"""Researchers' own data through the commands: TRL formats in Parquet files, dataset folders, CSV
with a column mapping, an unreachable hub id. Each result is compared with the same data as JSONL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset
from typer.testing import CliRunner

from dpo3d.data.records import read_records
from dpo3d.data.run_log import read_log
from dpo3d_cli.app import app

from .test_cli_train import ROOT, comparable, dpo3d, train_args
from .test_train_dpo import write_pairs

EXAMPLES = ROOT / "data" / "examples" / "pairs.jsonl"
runner = CliRunner()


def implicit(record: dict) -> dict:
    """A pair in TRL's conversational implicit-prompt form: no prompt, whole conversations."""
    prompt = record["prompt"]
    return {
        "chosen": [*prompt, {"role": "assistant", "content": record["chosen"]}],
        "rejected": [*prompt, {"role": "assistant", "content": record["rejected"]}],
    }


@pytest.fixture
def examples() -> list[dict]:
    return read_records(EXAMPLES)


def scores(path: Path) -> list[tuple]:
    return [(r["chosen_logp"], r["rejected_logp"], r["chosen_tokens"]) for r in read_records(path)]


def test_logprobs_scores_implicit_prompt_parquet_like_the_explicit_jsonl(tmp_path, tiny_model_dir, examples):
    Dataset.from_list([implicit(r) for r in examples]).to_parquet(tmp_path / "pairs.parquet")
    for source, out in ((EXAMPLES, "jsonl.jsonl"), (tmp_path / "pairs.parquet", "parquet.jsonl")):
        result = runner.invoke(app, ["logprobs", str(source), "--model", str(tiny_model_dir), "-o", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    assert scores(tmp_path / "parquet.jsonl") == scores(tmp_path / "jsonl.jsonl")
    assert [r["id"] for r in read_records(tmp_path / "parquet.jsonl")] == [f"pairs-{i}" for i in range(len(examples))]


def test_logprobs_reads_csv_through_a_column_mapping_and_writes_parquet(tmp_path, tiny_model_dir, examples):
    import pyarrow.parquet as pq

    rows = [{"question": r["prompt"][0]["content"], "good": r["chosen"], "bad": r["rejected"]} for r in examples[:3]]
    Dataset.from_list(rows).to_csv(tmp_path / "odd.csv", index=False)
    out = tmp_path / "scored.parquet"
    result = runner.invoke(app, ["logprobs", str(tmp_path / "odd.csv"), "--columns", "prompt=question,chosen=good,rejected=bad",
                                 "--model", str(tiny_model_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pylist()
    assert [row["chosen"] for row in table] == [r["chosen"] for r in examples[:3]]
    assert all(row["chosen_tokens"] > 0 and row["chosen_logp"] < 0 for row in table)


def test_a_bad_parquet_row_exits_2_naming_the_row_and_writes_nothing(tmp_path, tiny_model_dir, examples):
    rows = [implicit(r) for r in examples[:3]]
    rows[2]["rejected"] = [{"role": "user", "content": "something else"}, {"role": "assistant", "content": "x"}]
    Dataset.from_list(rows).to_parquet(tmp_path / "pairs.parquet")
    out = tmp_path / "scored.jsonl"
    result = runner.invoke(app, ["logprobs", str(tmp_path / "pairs.parquet"), "--model", str(tiny_model_dir), "-o", str(out)])
    assert result.exit_code == 2
    assert "pairs.parquet: row 2: no prompt field, and chosen and rejected share no first message" in " ".join(result.output.split())
    assert not out.exists()


def test_train_dpo_on_parquet_and_on_a_dataset_folder_equals_jsonl(tmp_path, tiny_model_dir):
    jsonl = write_pairs(tmp_path / "pairs.jsonl")
    rows = read_records(jsonl)
    Dataset.from_list([{**implicit(r), "unseen": r["unseen"][:1]} for r in rows]).to_parquet(tmp_path / "pairs.parquet")
    Dataset.from_list([{**r, "unseen": r["unseen"][:1]} for r in rows]).save_to_disk(str(tmp_path / "pairs_dir"))
    logs = {}
    for name, source in (("jsonl", jsonl), ("parquet", tmp_path / "pairs.parquet"), ("folder", tmp_path / "pairs_dir")):
        result = dpo3d(*train_args(source, tiny_model_dir, tmp_path / name, "--max-steps", "2", "--unseen", "0"))
        assert result.returncode == 0, result.stderr
        logs[name] = [{k: v for k, v in r.items() if k != "elapsed_s"} for r in comparable(tmp_path / name / "metrics.jsonl")]
    assert [r["step"] for r in logs["parquet"]] == [0, 1, 2]
    assert logs["parquet"] == logs["jsonl"] == logs["folder"]
    config = json.loads((tmp_path / "parquet" / "run_config.json").read_text())
    assert config["extra"]["pairs"] == str(tmp_path / "pairs.parquet")


def test_logprobs_reads_a_dataset_folder(tmp_path, tiny_model_dir, examples):
    Dataset.from_list(examples).save_to_disk(str(tmp_path / "pairs"))
    for source, out in ((EXAMPLES, "jsonl.jsonl"), (tmp_path / "pairs", "folder.jsonl")):
        result = runner.invoke(app, ["logprobs", str(source), "--model", str(tiny_model_dir), "-o", str(tmp_path / out)])
        assert result.exit_code == 0, result.output
    assert scores(tmp_path / "folder.jsonl") == scores(tmp_path / "jsonl.jsonl")
    assert [r["id"] for r in read_records(tmp_path / "folder.jsonl")] == [r["id"] for r in examples]


@pytest.mark.parametrize("form", ["folder", "parquet"])
def test_sample_reads_prompts_from_a_dataset_folder_or_parquet(tmp_path, tiny_model_dir, form):
    prompts = [{"id": f"q{i}", "prompt": [{"role": "user", "content": f"Say {i}."}]} for i in range(3)]
    source = tmp_path / ("prompts" if form == "folder" else "prompts.parquet")
    if form == "folder":
        Dataset.from_list(prompts).save_to_disk(str(source))
    else:
        Dataset.from_list(prompts).to_parquet(source)
    out = tmp_path / "samples.jsonl"
    result = runner.invoke(app, ["sample", "--prompts", str(source), "--model", str(tiny_model_dir),
                                 "-n", "2", "--max-new-tokens", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    samples = read_records(out)
    assert [(s["id"], s["sample_index"]) for s in samples] == [(f"q{i}", k) for i in range(3) for k in range(2)]
    assert all(s["prompt"] == prompts[int(s["id"][1])]["prompt"] for s in samples)


def test_sft_on_messages_and_train_rm_on_parquet_and_dataset_folders(tmp_path, tiny_model_dir):
    rows = read_records(write_pairs(tmp_path / "pairs.jsonl"))
    conversations = [{"messages": [*r["prompt"], {"role": "assistant", "content": r["chosen"]}]} for r in rows]
    Dataset.from_list(conversations).to_parquet(tmp_path / "chat.parquet")
    Dataset.from_list([implicit(r) for r in rows]).save_to_disk(str(tmp_path / "pairs_dir"))
    common = ["--model", str(tiny_model_dir), "--max-steps", "2", "--batch-size", "2", "--grad-accum", "1"]
    sft = dpo3d("sft", "--data", str(tmp_path / "chat.parquet"), "--out", str(tmp_path / "sft"), *common)
    assert sft.returncode == 0, sft.stderr
    # the same targets as JSONL prompt+completion records: the same losses
    Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"]} for r in rows]).to_json(tmp_path / "pc.jsonl")
    sft_jsonl = dpo3d("sft", "--data", str(tmp_path / "pc.jsonl"), "--out", str(tmp_path / "sft_jsonl"), *common)
    assert sft_jsonl.returncode == 0, sft_jsonl.stderr
    losses = [[r["loss"] for r in read_log(tmp_path / run / "metrics.jsonl") if "loss" in r] for run in ("sft", "sft_jsonl")]
    Dataset.from_list(conversations).save_to_disk(str(tmp_path / "chat_dir"))
    sft_dir = dpo3d("sft", "--data", str(tmp_path / "chat_dir"), "--out", str(tmp_path / "sft_dir"), *common)
    assert sft_dir.returncode == 0, sft_dir.stderr
    losses.append([r["loss"] for r in read_log(tmp_path / "sft_dir" / "metrics.jsonl") if "loss" in r])
    assert len(losses[0]) >= 2 and losses[0] == losses[1] == losses[2]

    Dataset.from_list([implicit(r) for r in rows]).to_parquet(tmp_path / "pairs.parquet")
    rm_logs = []
    for name in ("pairs_dir", "pairs.parquet"):
        rm = dpo3d("train-rm", "--pairs", str(tmp_path / name), "--out", str(tmp_path / f"rm_{name}"), *common)
        assert rm.returncode == 0, rm.stderr
        rm_logs.append([(r["step"], r.get("loss")) for r in read_log(tmp_path / f"rm_{name}" / "metrics.jsonl")])
    assert rm_logs[0][-1][0] == 2 and rm_logs[0] == rm_logs[1]


def test_an_unreachable_hub_id_fails_in_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "dpo3d", "logprobs", "someorg/some-prefs:train"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "someorg/some-prefs" in lines[0] and "HF_HUB_OFFLINE" in lines[0]
