"""Options several subcommands share, declared once."""

from __future__ import annotations

from pathlib import Path

import typer

from dpo3d.models.loading import BUNDLED, DTYPES, LoadOptions

MODEL = typer.Option(
    BUNDLED,
    "--model",
    "-m",
    help=f"A Hugging Face model folder, a hub id, or '{BUNDLED}' (SmolLM2-135M-Instruct, bundled, no network).",
    show_default=True,
)
TRUST_REMOTE_CODE = typer.Option(False, "--trust-remote-code", help="Allow a model's own Python code (off by default).")
DTYPE = typer.Option("float32", "--dtype", help=f"Weights dtype: {', '.join(DTYPES)} (float32 is the fast path on CPUs).")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1, ...")
BATCH_SIZE = typer.Option(8, "--batch-size", "-b", min=1, help="Records per forward pass.")
MAX_LENGTH = typer.Option(1024, "--max-length", min=8, help="Cut prompt+response to this many tokens.")
OUT = typer.Option(Path("-"), "--out", "-o", help="Output JSONL file ('-' = stdout). Written atomically.")


def load_options(dtype: str, trust_remote_code: bool, padding_side: str = "right") -> LoadOptions:
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    return LoadOptions(dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, padding_side=padding_side)

# --------------------------------------------------------------------------- data sources (dpo3d.data.inputs)

SOURCE_HELP = (
    "JSONL ('-' = stdin), .json, .parquet, .arrow, .csv, a save_to_disk or Parquet-shard folder "
    "(DIR:split), or a hub dataset id org/name[:split]"
)
COLUMNS = typer.Option(
    None, "--columns",
    help="Map the data's columns onto the fields the command reads, FIELD=COLUMN,..., "
    "e.g. prompt=question,chosen=good,rejected=bad.",
)
SUBSET = typer.Option(None, "--subset", help="The hub dataset's config (subset) name, for an org/name source.")


def data_spec(source, subset: str | None, columns: str | None):
    """The command's data options as one library DataSpec."""
    from dpo3d.data.inputs import DataSpec

    return DataSpec.of(source, subset, columns)
