"""Tables for the input layer: pyarrow for Parquet, Arrow and CSV files, 🤗 datasets for dataset folders,
``.json`` files and the hub, each read error turned into one :class:`~dpo3d.data.records.RecordError` line.

:mod:`dpo3d.data.inputs` wraps what these return in a ``Source``; nothing here knows of sources. No torch here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dpo3d.data.records import RecordError, Row

_BATCH_ROWS = 4096


def dataset_table(dataset):
    """A 🤗 Dataset's rows as one pyarrow Table (memory-mapped; its index mapping applied)."""
    if getattr(dataset, "_indices", None) is not None:
        dataset = dataset.flatten_indices()
    return dataset.data.table


def table_rows(table) -> Iterator[tuple[int, dict]]:
    start = 0
    for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
        for offset, row in enumerate(batch.to_pylist()):
            yield Row(start + offset), row
        start += batch.num_rows


def read_table(path: Path | list[Path], kind: str, name: str):
    import pyarrow as pa

    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            paths = path if isinstance(path, list) else [path]
            tables = [pq.read_table(p, memory_map=True) for p in paths]
            return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
        if kind == "csv":
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
        return _read_arrow(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as err:
        raise RecordError(name, None, f"cannot read it as {kind}: {_first_line(err)}") from None


def _read_arrow(path: Path):
    """An Arrow IPC file (Feather v2) or stream (what ``save_to_disk`` writes), memory-mapped."""
    import pyarrow as pa

    source = pa.memory_map(str(path))
    try:
        return pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_stream(source).read_all()


def refuse_nan(table, name: str) -> None:
    """A NaN in a float column would become invalid JSON downstream: name its row and field."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for field in table.schema:
        if pa.types.is_floating(field.type):
            column = table.column(field.name)
            bad = pc.fill_null(pc.or_(pc.is_nan(column), pc.is_inf(column)), False)
            if pc.any(bad).as_py():
                row = pc.index(bad, True).as_py()
                raise RecordError(name, Row(row), f"field '{field.name}' is NaN or infinite (write null for a missing number)")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# --------------------------------------------------------------------------- 🤗 datasets


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()  # stderr belongs to the command's own progress
    datasets.logging.set_verbosity_error()
    return datasets


def _pick_split(found, split: str | None, name: str):
    """A Dataset from a Dataset or DatasetDict: the asked split, else 'train', else the only one."""
    if not hasattr(found, "keys"):
        if split is not None:
            raise RecordError(name, None, f"this dataset has no splits to pick '{split}' from")
        return found
    splits = list(found.keys())
    chosen = split or ("train" if "train" in splits else splits[0] if len(splits) == 1 else None)
    if chosen not in splits:
        ask = f"no split '{split}'" if split else "several splits"
        raise RecordError(name, None, f"{ask}: pick one of {', '.join(splits)} with NAME:SPLIT")
    return found[chosen]


def load_from_disk(path: Path, split: str | None, name: str):
    datasets = _quiet_datasets()
    try:
        return _pick_split(datasets.load_from_disk(str(path)), split, name)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise RecordError(name, None, f"cannot read this dataset folder: {_first_line(err)}") from None


def load_json(path: Path, name: str):
    datasets = _quiet_datasets()
    try:
        return datasets.load_dataset("json", data_files=str(path), split="train")
    except Exception as err:  # the json builder raises several kinds (DatasetGenerationError, ArrowInvalid)
        cause = err.__cause__ or err
        raise RecordError(name, None, f"cannot read it as JSON: {_first_line(cause)}") from None


def load_hub(repo: str, split: str | None, subset: str | None, name: str):
    datasets = _quiet_datasets()
    try:
        return _pick_split(datasets.load_dataset(repo, subset, split=split), split, name)
    except RecordError:
        raise
    except Exception as err:  # offline, unknown id, gated: many exception types, one user-facing line
        raise RecordError(
            name, None,
            f"cannot load hub dataset '{repo}' ({type(err).__name__}: {_first_line(err)}); offline "
            "(no network, or HF_HUB_OFFLINE=1) only local files and folders work",
        ) from None
