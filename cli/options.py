"""Options several subcommands share, declared once: one name, short form, type, default and help each.

Where a shared option's default belongs to each command (``--max-steps``, ``--workers``), a factory
here keeps the name, short form, type and help, and the command passes its config's default.
"""

from __future__ import annotations

from pathlib import Path

import typer

from dpo3d.config.fields import settings
from dpo3d.models.loading import BUNDLED, DTYPES, LoadOptions
from dpo3d.models.precision import AUTO, INFERENCE_DTYPE_HELP

from . import common
from .renamed import Renamed

MODEL = typer.Option(
    BUNDLED,
    "--model",
    "-m",
    help=f"A Hugging Face model folder, a hub id, or '{BUNDLED}' (SmolLM2-135M-Instruct, bundled, no network).",
    show_default=True,
)
TRUST_REMOTE_CODE = typer.Option(
    False, "--trust-remote-code/--no-trust-remote-code", help="Allow a model's own Python code (off by default)."
)
_PICKLE = next(s for s in settings(LoadOptions) if s.name == "allow_pickle")
ALLOW_PICKLE = typer.Option(_PICKLE.default, *_PICKLE.flags(), help=_PICKLE.help)  # declared on LoadOptions
DTYPE = typer.Option(
    "float32", "--dtype",
    help=f"Weights dtype: {', '.join(DTYPES)}. To train, keep float32 and pass "
    "--mixed-precision bf16: pure bfloat16/float16 weights make AdamW round small updates away (at lr 1e-6 most "
    "weights never change).",
)
SAMPLE_DTYPE = typer.Option(AUTO, "--dtype", help=f"Weights dtype: {INFERENCE_DTYPE_HELP}")
DEVICE = typer.Option(
    "auto", "--device",
    help="auto (CUDA if present, else the CPU; under accelerate launch each process's GPU), cpu, cuda, cuda:1, ... "
    "(a trainer takes cuda:N in a one-process run; under accelerate launch pick GPUs with its --gpu_ids).",
)
BATCH_SIZE = typer.Option(8, "--batch-size", "-b", min=1, help="Records per forward pass.")
MAX_LENGTH = typer.Option(1024, "--max-length", min=8, help="Cut prompt+response to this many tokens.")
def output(kind: str):
    """An ``--out``-like option's callback: note the location (``kind``: "file" or "folder") so the error
    boundary checks it can be written before the command does any work (common.check_outputs)."""

    def remember(ctx: typer.Context, param: typer.CallbackParam, value):
        if value is not None and not ctx.resilient_parsing:
            ctx.meta.setdefault(common.OUTPUTS, []).append((kind, param.opts[0], value))
        return value

    return remember


OUT = typer.Option(
    Path("-"), "--out", "-o", help="Output JSONL file ('-' = stdout). Written atomically.", callback=output("file")
)
LIMIT = typer.Option(
    None, "--limit", min=0,
    help="Read only the first N records of the input (prompts: after --where and --shuffle; eval-* --completions: "
    "every answer to the first N problems).",
)
SHUFFLE = typer.Option(False, "--shuffle/--no-shuffle", help="Shuffle the prompts with --seed before --limit.")
RESUME = typer.Option(
    False, "--resume/--no-resume",
    help="Continue the interrupted run in --out: a trainer from its last checkpoint, sample after its finished chunks.",
)


def max_steps(default: int | None, help: str = "Optimizer steps; overrides --epochs.") -> typer.models.OptionInfo:
    """``--max-steps``: every trainer's step budget (``--steps`` before), with the command's own default."""
    return typer.Option(default, "--max-steps", min=1, help=help)


MATH_WORKERS_HELP = "Math judge worker processes; 0: judge in this process (judge math and eval-math default to one per CPU)."


def workers(default: int | None, help: str, minimum: int = 0) -> typer.models.OptionInfo:
    """``--workers -j``: worker processes, with the command's own default."""
    return typer.Option(default, "--workers", "-j", min=minimum, help=help)


def load_options(dtype: str, trust_remote_code: bool, padding_side: str = "right", allow_pickle: bool = False) -> LoadOptions:
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got '{dtype}'")
    return LoadOptions(dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, padding_side=padding_side,
                       allow_pickle=allow_pickle)

# --------------------------------------------------------------------------- an LLM judge beside the math judge (eval-math, study)

JUDGE = typer.Option(None, "--judge", help="llm: also grade the answers 1-5 with an LLM judge (the shares scored 5 and 4-or-5).")
BASE_URL = typer.Option(None, "--base-url", help="The LLM judge's OpenAI-compatible endpoint (replies cached as for `dpo3d judge llm`).")
JUDGE_MODEL = typer.Option(None, "--judge-model", help="The LLM judge's model name.")
API_KEY_ENV = typer.Option(
    "OPENAI_API_KEY", "--api-key-env",
    help="Environment variable holding the LLM judge's API key (unset: a dummy key, fine for local servers).",
)

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
PAIRS = typer.Option(
    None, "--pairs",
    help=f"Training pairs in any TRL preference format (explicit or implicit prompt, strings or chat messages; "
    f"optionally `unseen`): {SOURCE_HELP}.",
)
#: -p was --pairs on train-dpo and train-rm and --prompts on sample: it is --prompts now, wherever it is
PAIRS_P = Renamed("-p", "pairs", "--pairs", why="-p is --prompts in every command")


def required(value, flag: str):
    """A required input that is declared optional (so that an eager action such as --list-losses needs none)."""
    if value is None:
        raise typer.BadParameter(f"{flag} is required", param_hint=flag)
    return value


def data_spec(source, subset: str | None, columns: str | None):
    """The command's data options as one library DataSpec."""
    from dpo3d.data.inputs import DataSpec

    return DataSpec.of(source, subset, columns)
