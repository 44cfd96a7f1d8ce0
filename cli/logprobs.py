"""`dpo3d logprobs`: sequence log-probs of pairs or completions under a model."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path

import typer
from rich.table import Table

from dpo3d.data import formats, inputs
from dpo3d.data import records as rec
from dpo3d.models.loading import display_name, load_model_and_tokenizer, pick_device
from dpo3d.scoring import ches as ches_lib
from dpo3d.scoring.logprobs import score_records

from . import options
from .common import console, progress
from .config_file import CONFIG

#: records scored per model pass: the input streams through in chunks this size
CHUNK = 1024


def command(
    config: Path = CONFIG,
    data: str = typer.Argument(
        "-", help=f"Pairs (any TRL preference format) or completions (prompt, completion, or messages): {options.SOURCE_HELP}."
    ),
    columns: str = options.COLUMNS,
    subset: str = options.SUBSET,
    limit: int = options.LIMIT,
    model: str = options.MODEL,
    out: Path = options.OUT,
    batch_size: int = options.BATCH_SIZE,
    max_length: int = options.MAX_LENGTH,
    padding_side: str = typer.Option("right", "--padding-side", help="Pad on the 'left' or 'right'; results agree."),
    group_by: str = typer.Option(None, "--group-by", help="Summarise per value of this field (e.g. chosen_source)."),
    ref: str = typer.Option(None, "--ref", help="Reference model: also add DPO's implicit rewards β·(log π - log π_ref) and report their accuracy on the pairs (the base a DPO checkpoint was trained from)."),
    beta: float = typer.Option(0.1, "--beta", help="β of the implicit rewards (with --ref)."),
    ches: bool = typer.Option(False, "--ches/--no-ches", help="Also add each pair's CHES score under --model: ches and ches_normalized (Razin et al. 2025, Def. 2; higher = the pair is likelier to drag the chosen log-prob down under DPO)."),
    drop_highest_ches: float = typer.Option(None, "--drop-highest-ches", metavar="FRACTION", help="Score CHES (implies --ches) and write only the pairs left after dropping this share, in [0, 1), with the highest ches_normalized: ⌊FRACTION·n⌋ pairs, ties dropped in file order; the rest keep their order. Razin et al. 2025 (§6) filter DPO data this way. Holds the pairs in memory."),
    dtype: str = options.DTYPE,
    device: str = options.DEVICE,
    trust_remote_code: bool = options.TRUST_REMOTE_CODE,
    allow_pickle: bool = options.ALLOW_PICKLE,
) -> None:
    """Score each record's response(s): log π(y|x) summed over the response tokens.

    Adds **chosen_logp, rejected_logp** (sums), **chosen_logp_mean, rejected_logp_mean**
    (per token) and **chosen_tokens, rejected_tokens** to each pair — or completion_logp,
    completion_logp_mean, completion_tokens to a completion — and prints the paper's Table 1 view
    (mean per-token log-prob of chosen and rejected) on stderr. Run it before and after training
    to see which 3D-property a run showed: compare the per-token changes (a drastic drop is the
    rejected falling far faster than the chosen rises; a falling chosen is displacement or degradation).

    With `--ref BASE`, pairs also get **chosen_reward**, **rejected_reward** (β·(log π - log π_ref))
    and **implicit_margin**, and stderr gives the implicit-reward accuracy: a trained DPO
    checkpoint scored on the held-out pairs a reward model was evaluated on (the paper's Fig. 4).

    Example: `dpo3d logprobs data/examples/pairs.jsonl -o scored.jsonl`

    Example: `dpo3d logprobs heldout.jsonl --model runs/dpo --ref smollm2-135m-instruct -o scored.jsonl`

    With `--ches`, pairs also get **ches** and **ches_normalized**: the centred hidden-embedding
    similarity of Razin et al. 2025 ("Unintentional Unalignment", ICLR 2025), ⟨H⁺, H⁻⟩ − ‖H⁺‖²
    where H± sums the model's last hidden states over the positions that predict the chosen (+)
    or rejected (−) tokens, and the same with H± divided by the response lengths. Pairs with high
    CHES tend to lower the chosen log-prob under DPO (likelihood displacement). Score the model
    you are about to train, and drop the riskiest share before training:

    Example: `dpo3d logprobs pairs.jsonl --drop-highest-ches 0.1 -o kept.jsonl`
    """
    if padding_side not in ("left", "right"):
        raise ValueError("--padding-side must be 'left' or 'right'")
    if drop_highest_ches is not None:
        if not 0 <= drop_highest_ches < 1:
            raise ValueError(f"--drop-highest-ches must be a share in [0, 1), got {drop_highest_ches}")
        ches = True
    source = inputs.open_source(options.data_spec(data, subset, columns))
    load = options.load_options(dtype, trust_remote_code, padding_side, allow_pickle)
    with console.status(f"loading {model}"):
        lm, tokenizer = load_model_and_tokenizer(model, load)
        lm.to(pick_device(device))
    reference = None
    if ref is not None:
        with console.status(f"loading {ref} (reference)"):
            reference = load_model_and_tokenizer(ref, load)
            reference[0].to(pick_device(device))
    shown: list[tuple[str, dict]] = []  # (group, score) of every record, for the tables on stderr

    def scored(advance):
        records = itertools.islice(inputs.stream(source, formats.as_pair_or_completion, ids=True), limit)
        for chunk in inputs.chunks(records, CHUNK):
            if ches:  # CHES reads the hidden states of the forward that scores the log-probs
                scores = ches_lib.ches_records(lm, tokenizer, chunk, batch_size=batch_size, max_length=max_length,
                                               with_logprobs=True)
            else:
                scores = score_records(lm, tokenizer, chunk, batch_size=batch_size, max_length=max_length)
            if reference is not None:
                base = score_records(*reference, chunk, batch_size=batch_size, max_length=max_length)
                scores = [with_implicit_reward(score, base_score, beta) for score, base_score in zip(scores, base, strict=True)]
            for record, score in zip(chunk, scores, strict=True):
                shown.append((str(record.get(group_by, "—")) if group_by else "all", score))
                yield {**record, **score}
            advance(len(chunk))

    with progress() as bar:
        total = source.size if limit is None or source.size is None else min(limit, source.size)
        task = bar.add_task("log-probs", total=total, rate="")
        records = scored(lambda n: bar.advance(task, n))
        if drop_highest_ches is not None:
            records = kept_after_dropping(list(records), drop_highest_ches)
        rec.write_records(records, out)
    console.print(table1(shown, display_name(model), group_by))
    margins = [score["implicit_margin"] for _, score in shown if "implicit_margin" in score]
    if margins:
        right = sum(margin > 0 for margin in margins)
        console.print(f"implicit-reward accuracy vs {display_name(ref)} (β = {beta}): {right}/{len(margins)} = "
                      f"{right / len(margins):.1%}; mean margin {sum(margins) / len(margins):.3f}", highlight=False)


def kept_after_dropping(records: list[dict], fraction: float) -> list[dict]:
    """The records left once the ``fraction`` with the highest ches_normalized are gone, in order."""
    drop = ches_lib.highest_ches([record["ches_normalized"] for record in records], fraction)
    console.print(f"--drop-highest-ches {fraction}: dropped {len(drop)} of {len(records)} pairs "
                  f"(the highest ches_normalized), kept {len(records) - len(drop)}", highlight=False)
    return [record for index, record in enumerate(records) if index not in drop]


def with_implicit_reward(score: dict, base: dict, beta: float) -> dict:
    """A pair's score plus β·(log π - log π_ref) per side and their difference (completions unchanged)."""
    if "chosen_logp" not in score:
        return score
    chosen = beta * (score["chosen_logp"] - base["chosen_logp"])
    rejected = beta * (score["rejected_logp"] - base["rejected_logp"])
    return {**score, "chosen_reward": chosen, "rejected_reward": rejected, "implicit_margin": chosen - rejected}


def table1(shown: list[tuple[str, dict]], model_name: str, group_by: str | None) -> Table:
    """Mean per-token log-probs of chosen and rejected (the paper's Table 1), per group."""
    groups: dict[str, list[dict]] = {}
    for key, score in shown:
        groups.setdefault(key, []).append(score)
    table = Table(title=f"mean per-token log-prob under {model_name}", title_justify="left")
    table.add_column(group_by or "records")
    table.add_column("n", justify="right")
    for column in ("chosen", "rejected", "chosen − rejected", "completion"):
        table.add_column(column, justify="right")

    def mean_of(rows: list[dict], key: str) -> float | None:
        values = [row[key] for row in rows if key in row]
        return statistics.fmean(values) if values else None

    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.3f}"

    for key, rows in groups.items():
        chosen, rejected = mean_of(rows, "chosen_logp_mean"), mean_of(rows, "rejected_logp_mean")
        margin = None if chosen is None or rejected is None else chosen - rejected
        table.add_row(key, str(len(rows)), cell(chosen), cell(rejected), cell(margin), cell(mean_of(rows, "completion_logp_mean")))
    return table
