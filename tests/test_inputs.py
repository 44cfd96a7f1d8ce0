"""The one input layer: every accepted source reads to the same records; bad input names its row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict

from dpo3d.data import formats, inputs
from dpo3d.data.records import RecordError, Row, read_records, write_records

ROWS = [
    {"id": f"q{i}", "prompt": f"Question {i}?", "chosen": f"Right {i}.", "rejected": f"Wrong {i}.", "score": i / 2}
    for i in range(5)
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def sources(tmp_path) -> dict[str, str]:
    """The same five rows in every accepted form."""
    table = pa.Table.from_pylist(ROWS)
    made = {"jsonl": str(write_jsonl(tmp_path / "rows.jsonl", ROWS))}
    pq.write_table(table, tmp_path / "rows.parquet")
    made["parquet"] = str(tmp_path / "rows.parquet")
    with pa.ipc.new_file(str(tmp_path / "rows.arrow"), table.schema) as writer:
        writer.write_table(table)
    made["arrow-file"] = str(tmp_path / "rows.arrow")
    with pa.ipc.new_stream(str(tmp_path / "stream.arrow"), table.schema) as writer:
        writer.write_table(table)
    made["arrow-stream"] = str(tmp_path / "stream.arrow")
    pcsv.write_csv(table, tmp_path / "rows.csv")
    made["csv"] = str(tmp_path / "rows.csv")
    (tmp_path / "array.json").write_text(json.dumps(ROWS))
    made["json-array"] = str(tmp_path / "array.json")
    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    made["save_to_disk"] = str(tmp_path / "saved")
    DatasetDict({"train": Dataset.from_list(ROWS[:2]), "test": Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dict"))
    made["dict:test"] = str(tmp_path / "dict") + ":test"
    shards = tmp_path / "shards" / "data"
    shards.mkdir(parents=True)
    pq.write_table(table.slice(0, 3), shards / "train-00000-of-00002.parquet")
    pq.write_table(table.slice(3), shards / "train-00001-of-00002.parquet")
    made["shards"] = str(tmp_path / "shards")
    return made


@pytest.mark.parametrize(
    "kind", ["jsonl", "parquet", "arrow-file", "arrow-stream", "csv", "json-array", "save_to_disk", "dict:test", "shards"]
)
def test_every_source_reads_the_same_records(sources, kind):
    assert inputs.read(sources[kind]) == ROWS


def test_tables_know_their_size_and_number_rows_from_zero(sources):
    source = inputs.open_source(sources["parquet"])
    assert source.size == 5 and source.kind == "table"
    positions = [position for position, _ in source]
    assert positions == [0, 1, 2, 3, 4] and all(isinstance(p, Row) for p in positions)
    jsonl = [position for position, _ in inputs.open_source(sources["jsonl"])]
    assert jsonl == [1, 2, 3, 4, 5] and not any(isinstance(p, Row) for p in jsonl)


def test_a_dataset_dict_without_a_split_takes_train_and_names_the_others(sources, tmp_path):
    assert inputs.read(str(tmp_path / "dict")) == ROWS[:2]
    with pytest.raises(RecordError, match=r"no split 'dev': pick one of train, test"):
        inputs.read(str(tmp_path / "dict") + ":dev")


def test_column_mapping_renames_onto_the_fields_a_command_reads(tmp_path):
    rows = [{"question": "2+2?", "good": "4", "bad": "5", "other": 1}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "odd.parquet")
    mapped = inputs.read(str(tmp_path / "odd.parquet"), formats.as_pair, columns="prompt=question,chosen=good,rejected=bad")
    assert mapped == [{"other": 1, "prompt": "2+2?", "chosen": "4", "rejected": "5"}]
    with pytest.raises(RecordError, match=r"odd.parquet: row 0: --columns: no field 'best'"):
        inputs.read(str(tmp_path / "odd.parquet"), columns="chosen=best")
    with pytest.raises(ValueError, match="FIELD=COLUMN"):
        inputs.parse_columns("prompt")


def test_a_bad_table_row_is_named_by_its_row(tmp_path):
    rows = [dict(ROWS[0]), {**ROWS[1], "rejected": None}]
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(RecordError) as info:
        inputs.read(str(path), formats.as_pair)
    assert str(info.value) == f"{path}: row 1: field 'rejected' should be a string or a list of chat messages"


def test_a_missing_column_fails_on_the_first_row(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "chosen": "c"}] * 3), path)
    with pytest.raises(RecordError) as info:
        inputs.read(str(path), formats.as_pair)
    assert str(info.value) == f"{path}: row 0: missing field 'rejected' (a pair needs chosen and rejected)"


def test_nan_in_a_table_is_refused_with_its_row_and_field(tmp_path):
    path = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "score": [1.0, math.nan, 2.0]}), path)
    with pytest.raises(RecordError) as info:
        inputs.read(str(path))
    assert str(info.value) == f"{path}: row 1: field 'score' is NaN or infinite (write null for a missing number)"


def test_a_binary_file_read_as_jsonl_says_what_it_is(sources, tmp_path):
    disguised = tmp_path / "pairs.jsonl"
    disguised.write_bytes(Path(sources["parquet"]).read_bytes())
    with pytest.raises(RecordError) as info:
        inputs.read(str(disguised))
    message = str(info.value)
    assert message.startswith(f"{disguised}: this is a Parquet file, not JSONL text") and ".parquet" in message


def test_an_unknown_suffix_lists_the_accepted_formats(tmp_path):
    path = tmp_path / "pairs.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(RecordError) as info:
        inputs.read(str(path))
    assert str(info.value).startswith(f"{path}: unknown format '.xlsx' (accepted: JSONL")


def test_missing_files_folders_and_empty_input(tmp_path):
    with pytest.raises(RecordError, match="no such file or folder"):
        inputs.read(str(tmp_path / "nothing.parquet"))
    with pytest.raises(RecordError, match="neither a dataset saved with save_to_disk nor Parquet shards"):
        inputs.read(str(tmp_path))
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), tmp_path / "empty.parquet")
    with pytest.raises(RecordError, match="empty input: no records"):
        inputs.read(str(tmp_path / "empty.parquet"))


def test_ids_default_to_stem_and_position_and_become_strings(tmp_path):
    path = tmp_path / "hh.parquet"
    pq.write_table(pa.Table.from_pylist([{"chosen": "a"}, {"chosen": "b"}]), path)
    assert [r["id"] for r in inputs.read(str(path), ids=True)] == ["hh-0", "hh-1"]
    jsonl = write_jsonl(tmp_path / "n.jsonl", [{"id": 7}, {"x": 1}])
    assert [r["id"] for r in inputs.read(str(jsonl), ids=True)] == ["7", "n-2"]
    with pytest.raises(RecordError, match=r"n2.jsonl:1: field 'id' should be a string"):
        inputs.read(str(write_jsonl(tmp_path / "n2.jsonl", [{"id": True}])), ids=True)


def test_stream_is_lazy(tmp_path):
    path = tmp_path / "bad_late.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{oops\n")
    records = inputs.stream(inputs.open_source(str(path)))
    assert next(records) == ROWS[0]  # the bad second line is not read yet
    with pytest.raises(RecordError, match="bad_late.jsonl:2: malformed JSON"):
        next(records)


def test_parquet_output_round_trips_and_infers_the_schema_over_all_records(tmp_path):
    rows = [{"id": "a", "verdict": {"status": "ok"}}, {"id": "b", "verdict": {"status": "bad", "pred": "3"}, "extra": [1, 2]}]
    assert write_records(rows, tmp_path / "out.parquet") == 2
    back = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert back == [
        {"id": "a", "verdict": {"status": "ok", "pred": None}, "extra": None},
        {"id": "b", "verdict": {"status": "bad", "pred": "3"}, "extra": [1, 2]},
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]  # no temp file left


def test_parquet_output_refuses_mixed_types_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="cannot be one Parquet table"):
        write_records([{"prompt": "text"}, {"prompt": [{"role": "user", "content": "x"}]}], tmp_path / "out.parquet")
    assert list(tmp_path.iterdir()) == []


def test_jsonl_reading_keeps_its_guarantees(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": NaN}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: NaN is not valid JSON"):
        read_records(path)
    path.write_bytes(b'{"a": 1}\n\n{"b": "\xff"}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:3: not valid UTF-8 \(byte 7\)"):
        read_records(path)
