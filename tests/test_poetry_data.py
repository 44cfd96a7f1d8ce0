"""The shipped poem and slogan prompt files: schema, splits, sizes, and that the rules can score them."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from dpo3d.data.records import read_records
from dpo3d.poetry import POEM_FORMS, score_poem, score_slogan
from dpo3d.poetry.ci_tunes import known_tunes

DATA = Path(__file__).resolve().parent.parent / "data"
POEM_FILES = ["train.jsonl", "test.jsonl", "english_train.jsonl", "english_test.jsonl"]


def text(record: dict) -> str:
    """The prompt's text: the shipped prompts are one user message (so instruct models get their chat template)."""
    [message] = record["prompt"]
    assert message["role"] == "user"
    return message["content"]


def load(*parts: str) -> list[dict]:
    return read_records(DATA.joinpath(*parts))


def test_files_exist_with_readmes_and_stay_small():
    for folder in ("poems", "slogans"):
        assert (DATA / folder / "README.md").is_file()
    files = [DATA / "poems" / name for name in POEM_FILES] + [DATA / "slogans" / n for n in ("train.jsonl", "test.jsonl")]
    assert sum(path.stat().st_size for path in files) < 10 * 2**20


def test_chinese_poem_prompts_schema_and_splits():
    train, test = load("poems", "train.jsonl"), load("poems", "test.jsonl")
    assert (len(train), len(test)) == (3600, 360)  # data/poems/README.md
    for record in train + test:
        assert {"id", "prompt", "reference", "form", "title", "language", "meta"} <= record.keys()
        assert record["language"] == "zh" and record["form"] in POEM_FORMS
        assert record["title"] in text(record)
        assert {"author", "dynasty", "source"} <= record["meta"].keys()
        if record["form"] == "ci":
            assert record["tune"] in known_tunes() and record["tune"] in text(record)
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert not {r["reference"] for r in train} & {r["reference"] for r in test}
    assert {r["form"] for r in test} == {"wujue", "qijue", "wulv", "qilv", "ci"}
    assert len({r["id"] for r in train}) == len(train)


def test_references_score_as_recorded_and_have_the_asked_shape():
    records = load("poems", "test.jsonl") + random.Random(0).sample(load("poems", "train.jsonl"), 200)
    for record in records:
        scores = score_poem(record, record["reference"])
        assert {k: round(v, 4) for k, v in scores.items()} == record["meta"]["reference_scores"], record["id"]
        assert scores["row_number"] == scores["words_per_row"] == scores["title"] == 1.0, record["id"]


def test_english_poem_prompts():
    train, test = load("poems", "english_train.jsonl"), load("poems", "english_test.jsonl")
    assert len(train) >= 100 and len(test) >= 20
    for record in train + test:
        assert record["language"] == "en" and record["form"] in ("haiku", "limerick", "quatrain")
        assert record["form"] in text(record) and record["title"] in text(record)
        assert record["subject"] in text(record)
    assert not {r["subject"] for r in train} & {r["subject"] for r in test}  # unseen subjects in test


def test_slogan_prompts():
    train, test = load("slogans", "train.jsonl"), load("slogans", "test.jsonl")
    assert len(train) >= 1000 and len(test) >= 100
    for record in train + test:
        assert record["language"] in ("zh", "en")
        assert 1 <= record["min_length"] <= record["length"]
        assert record["subject"] in text(record) and all(word in text(record) for word in record["banned"])
        assert not any(word in record["subject"] for word in record["banned"])
        # the prompt itself is never a passing answer: it is a copy and too long
        assert score_slogan(record, text(record))["score"] < 1.0
    assert {r["language"] for r in test} == {"zh", "en"}
    assert not {r["subject"] for r in train} & {r["subject"] for r in test}


@pytest.mark.parametrize("module", ["dpo3d.poetry", "dpo3d.poetry.scoring", "dpo3d.poetry.slogan"])
def test_poetry_imports_no_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
