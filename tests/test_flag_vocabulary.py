"""One vocabulary of flags across every subcommand.

The table below is built from the real app (``typer.main.get_command``), one row per (command,
option). A long name means one thing everywhere: the same short form, the same type and the same
default, unless ALLOWED below says, with its reason, that it may differ. A short form stands for one
long name. A boolean is written ``--x/--no-x`` (a bare ``--x`` typed as a bool would show
``--x BOOLEAN`` and refuse ``--x true``).

Old spellings kept for one release (hidden, warning on use) are listed in ``DEPRECATED`` and are left
out of the vocabulary checks; each must be hidden and must warn.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import typer.main
from typer.testing import CliRunner

from dpo3d_cli import loss_options
from dpo3d_cli.app import app


@dataclass(frozen=True)
class Row:
    command: str
    name: str  # the param's name (the function argument)
    longs: tuple[str, ...]  # every long spelling, the --no-x form included
    shorts: tuple[str, ...]
    type: str  # as --help shows it: <int>, <int range>, <float>, <str>, <path>, <bool>, <list[str]>
    default: object
    is_flag: bool
    secondary: tuple[str, ...]  # the --no-x forms of a boolean
    hidden: bool
    multiple: bool
    help: str

    @property
    def key(self) -> str:
        """What the option is called: its first long name, or its short form where it has none (-n)."""
        return self.longs[0] if self.longs else self.shorts[0]


def _walk(command, path: str):
    if hasattr(command, "commands"):  # a group (typer ships its own click: no isinstance on click's classes)
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, f"{path} {name}".strip())
    else:
        yield path, command


def _default(param) -> object:
    default = param.default
    if callable(default):
        default = default()
    if isinstance(default, (list, tuple)):
        default = tuple(default) or None
    return None if param.required else default


def flag_table() -> list[Row]:
    rows = []
    for path, command in _walk(typer.main.get_command(app), ""):
        ctx = command.context_class(command)
        for param in command.params:
            if param.param_type_name != "option" or param.name == "help":
                continue
            names = [*param.opts, *param.secondary_opts]
            rows.append(Row(
                command=path or "dpo3d", name=param.name,
                longs=tuple(n for n in names if n.startswith("--")), shorts=tuple(n for n in names if not n.startswith("--")),
                type=param.display_type(ctx), default=_default(param), is_flag=param.is_flag,
                secondary=tuple(param.secondary_opts), hidden=param.hidden, multiple=param.multiple, help=param.help or "",
            ))
    return rows


# --------------------------------------------------------------------------- what may differ, and why

#: (long name, aspect) -> why it may differ between commands. aspect: "default", "type" or "short".
STUDY = "the study's cells are short and alike: its defaults are StudyConfig's (tested below)"
ALLOWED = {
    # --out: where a command writes, so its default follows the command
    ("--out", "default"): "a JSONL file ('-' = stdout) for the record commands (sample, logprobs, judge, build-pairs, "
                          "edit-pairs, datasets), a run folder (required) for the trainers and study, runs/toy for toy, "
                          "compare.png for compare, and none (optional) for eval-* and diagnose",
    ("--dtype", "default"): "sample's is auto (bfloat16 where the device has bf16 units: 1.5-1.7x faster sampling on "
                            "a CPU with avx512_bf16); the trainers keep float32 weights (mixed precision is "
                            "--mixed-precision), the scorers and evaluators measure in float32",
    ("--model", "default"): "one model, the bundled one by default; eval-* repeats --model (none: the bundled one)",
    ("--model", "type"): "eval-* puts several models side by side: --model repeats there",
    ("--data", "default"): "the problems each evaluator answers by default (math500, the poem test set); sft has none",
    # how many go through the model at once: the right number depends on what the command runs
    ("--batch-size", "default"): "records per forward pass: LoopConfig's 8 to score (logprobs, judge rm) and train, "
                                 "SamplingConfig's to sample, 16 for eval-* (greedy answers), StudyConfig's for study",
    ("--reward", "default"): "ppo asks for its reward; iterate's rounds default to math (math-verify)",
    ("--lr", "default"): "each trainer's own: LoopConfig's 1e-6 (DPO), SFT_LR, RM_LR, PPOConfig's, the toy's Adam "
                         "step and StudyConfig's",
    ("--max-steps", "default"): "the trainers run --epochs unless given (None); toy, ppo and study run a fixed budget "
                                "(their configs' defaults)",
    ("--temperature", "default"): "SamplingConfig's for sample, greedy unless -n for eval-*, PPOConfig's for the "
                                  "rollouts, StudyConfig's for the study's candidates",
    ("--max-new-tokens", "default"): "the length of what each command generates: SamplingConfig's, a math answer "
                                     "(512), a poem (128), a PPO rollout, the study's candidates",
    ("--max-length", "default"): "1024 to score and train; diagnose's ProbeOptions and StudyConfig (shorter)",
    ("-n", "default"): "candidates per prompt: SamplingConfig's for sample, 1 (greedy) for eval-*, 8 in the study",
    ("--eval-every", "default"): "each trainer's run config (DPORunConfig, SFTRunConfig, RMRunConfig) and StudyConfig",
    ("--probe-size", "default"): "train-dpo's DPORunConfig, diagnose's ProbeOptions and StudyConfig",
    ("--unseen", "default"): "train-dpo's DPORunConfig and StudyConfig",
    ("--workers", "default"): "the math judge uses one process per CPU (None); the study judges in its own process "
                              "(StudyConfig.math_workers = 0)",
    ("--timeout", "default"): "judge math: seconds for one answer's parse (5); judge llm: for one HTTP request (60)",
    # the per-loss flags of train-dpo and toy (--beta, --gamma, ...) are being replaced by --loss-arg in another change;
    # logprobs' and study's --beta is DPO's β with the paper's 0.1
    ("--loss", "default"): "one loss for train-dpo and toy (dpo); study repeats --loss (none: its default set)",
    ("--loss", "type"): "study trains several losses: --loss repeats there",
    ("--scenario", "type"): "toy takes a comma list or 'all' (and --init-dist instead); study repeats -s N",
    ("--scenario", "default"): "toy: all; study: every scenario when none is given",
    ("--grad-accum", "default"): STUDY,
    ("--log-every", "default"): STUDY,
    ("--save-every", "default"): STUDY,
    ("--schedule", "default"): STUDY,
    ("--warmup-ratio", "default"): STUDY,
    ("--ppo-epochs", "default"): STUDY,
}

#: one-off actions rather than settings: an eager flag that prints and exits has no --no-x
ACTIONS = {"--version", "--list-losses"}

#: old spellings kept one release (cli/renamed.py): (command, the old spelling) -> the spelling to use now, and
#: arguments that make the command stop early (a bad value) once it has read its flags
DEPRECATED: dict[tuple[str, str], tuple[str, list[str]]] = {
    # -p is --prompts (sample, ppo) in every command
    ("train-dpo", "-p"): ("--pairs", ["-p", "missing.jsonl", "--out", "runs/x", "--device", "nowhere"]),
    ("train-rm", "-p"): ("--pairs", ["-p", "missing.jsonl", "--out", "runs/x", "--device", "nowhere"]),
    ("ppo", "--steps"): ("--max-steps", ["--steps", "2", "-p", "x", "-r", "math", "--out", "runs/x", "--device", "nowhere"]),
    ("ppo", "--gamma"): ("--gae-gamma", ["--gamma", "0.9", "-p", "x", "-r", "math", "--out", "runs/x", "--device", "nowhere"]),
    ("toy", "--steps"): ("--max-steps", ["--steps", "2", "--losses", " ", "--sweep"]),
    ("study", "--steps"): ("--max-steps", ["--steps", "2", "--out", "runs/x", "--judge", "nobody"]),
    ("study", "--no-rm"): ("--no-reward-model", ["--no-rm", "--out", "runs/x", "--judge", "nobody"]),
    # -j is --workers (worker processes) in every command
    ("judge llm", "-j"): ("--concurrency", ["-j", "2", "--base-url", "u", "--judge-model", "m", "--cache", "c", "--no-cache"]),
}


def _vocabulary() -> list[Row]:
    return [row for row in flag_table() if not row.hidden]


ASPECTS = {
    "short": lambda row: row.shorts,
    "type": lambda row: (row.type, row.is_flag, row.multiple),
    "default": lambda row: row.default,
}


def _seen(aspect: str) -> dict[str, dict[object, list[str]]]:
    """Per option, each value of ``aspect`` it has and the commands that give it that value."""
    by_name: dict[str, dict[object, list[str]]] = {}
    for row in _vocabulary():
        by_name.setdefault(row.key, {}).setdefault(ASPECTS[aspect](row), []).append(row.command)
    return by_name


def _differences(aspect: str) -> list[str]:
    return [
        f"{name} {aspect}: " + "; ".join(f"{v!r} in {', '.join(commands)}" for v, commands in seen.items())
        for name, seen in sorted(_seen(aspect).items())
        if len(seen) > 1 and (name, aspect) not in ALLOWED
    ]


def test_the_table_covers_every_subcommand():
    commands = {row.command for row in flag_table()}
    assert {"sample", "train-dpo", "train-rm", "sft", "ppo", "logprobs", "study", "toy", "judge math", "judge llm",
            "eval-math", "eval-poem", "build-pairs", "edit-pairs", "datasets", "compare", "diagnose"} <= commands
    assert len(commands) >= 18


def test_one_long_name_has_one_short_form():
    bad = _differences("short")
    assert not bad, "\n".join(bad)


def test_one_long_name_has_one_type():
    bad = _differences("type")
    assert not bad, "\n".join(bad)


def test_one_long_name_has_one_default():
    bad = _differences("default")
    assert not bad, "\n".join(bad)


def test_one_short_form_stands_for_one_long_name():
    meanings: dict[str, set[str]] = {}
    for row in _vocabulary():
        for short in row.shorts:
            meanings.setdefault(short, set()).add(row.longs[0] if row.longs else short)
    bad = [f"{short}: {', '.join(sorted(longs))}" for short, longs in meanings.items() if len(longs) > 1]
    assert not bad, "\n".join(bad)


def test_booleans_are_written_x_slash_no_x():
    bare = [f"{row.command} {row.key}" for row in flag_table()
            if not row.hidden and (row.type == "<bool>" or row.is_flag) and not row.secondary and row.key not in ACTIONS]
    assert not bare, "\n".join(bare)


def test_every_subcommand_takes_a_config_file():
    """`--config FILE` (TOML/YAML/JSON, or a run's run_config.json) gives any command its options."""
    commands = {row.command for row in flag_table()} - {"dpo3d"}
    assert sorted(commands - {row.command for row in flag_table() if row.key == "--config"}) == []


def test_an_allowed_difference_is_a_real_one():
    """An ALLOWED entry whose option no longer differs in that way (or is gone) is stale: remove it."""
    stale = [f"{name} {aspect}" for name, aspect in ALLOWED if len(_seen(aspect).get(name, {})) < 2]
    assert not stale, "\n".join(stale)


#: the per-loss flags of earlier releases, now --loss-arg KEY=VALUE (cli/loss_options.py; tested in test_losses_cli.py)
LOSS_FLAG_ALIASES = {(command, loss_options.flag(key)) for command in ("train-dpo", "toy") for key in loss_options.DEPRECATED}


def test_the_hidden_options_are_the_deprecated_spellings():
    hidden = {(row.command, name) for row in flag_table() if row.hidden for name in (*row.longs, *row.shorts)}
    assert hidden == set(DEPRECATED) | LOSS_FLAG_ALIASES


@pytest.mark.parametrize("command, old", sorted(DEPRECATED))
def test_a_deprecated_spelling_still_works_and_warns(command, old):
    new, args = DEPRECATED[(command, old)]
    result = CliRunner().invoke(app, [*command.split(), *args])
    assert f"warning: {old} is deprecated; it is now {new}" in result.stderr, result.output
    assert result.exit_code == 2  # then the bad value stops it, as it would have without the old spelling


def test_the_old_and_the_new_spelling_together_are_refused():
    result = CliRunner().invoke(app, ["toy", "--steps", "2", "--max-steps", "3"])
    assert result.exit_code == 2 and "--steps is the old spelling of --max-steps: give one of them" in result.stderr


# --------------------------------------------------------------------------- the inputs


SOURCE_OPTIONS = {"--pairs", "--prompts", "--data", "--completions", "--train-prompts"}
SOURCE_ARGUMENTS = {"data", "inputs", "prompts"}  # positional sources read through dpo3d.data.inputs


def test_every_command_that_reads_a_source_takes_columns_and_subset():
    for path, command in _walk(typer.main.get_command(app), ""):
        names = {name for param in command.params for name in getattr(param, "opts", [])}
        arguments = {param.name for param in command.params if param.param_type_name == "argument"}
        if names & SOURCE_OPTIONS or arguments & SOURCE_ARGUMENTS:
            assert {"--columns", "--subset"} <= names, path


def test_p_is_prompts_and_pairs_has_no_short_form():
    rows = [row for row in _vocabulary() if row.key in ("--prompts", "--pairs")]
    assert {(row.key, row.shorts) for row in rows} == {("--prompts", ("-p",)), ("--pairs", ())}
    assert {row.command for row in rows if row.key == "--prompts"} >= {"sample", "ppo"}


# --------------------------------------------------------------------------- defaults stated once, in the configs


def _defaults(command: str) -> dict[str, object]:
    return {row.name: row.default for row in flag_table() if row.command == command and not row.hidden}


def _config_defaults(config) -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}


def test_the_trainers_defaults_are_the_loop_configs():
    from dpo3d.training.config import LoopConfig
    from dpo3d.training.rm import RM_LR
    from dpo3d.training.sft import SFT_LR

    loop = _config_defaults(LoopConfig)
    own_lr = {"sft": SFT_LR, "train-rm": RM_LR, "train-dpo": LoopConfig.lr}
    for command, lr in own_lr.items():
        given = _defaults(command)
        assert given["lr"] == lr
        assert {name: given[name] for name in loop if name in given and name != "lr"} == \
               {name: loop[name] for name in loop if name in given and name != "lr"}, command


def test_ppo_defaults_are_ppo_configs():
    """PPO's own settings from PPOConfig, the loop's from LoopConfig except where PPO's tree says (max_steps)."""
    from dpo3d.training.config import LoopConfig
    from dpo3d.training.ppo import LOOP_DEFAULTS, LOOP_FIELDS, PPOConfig

    loop = _config_defaults(LoopConfig)
    ppo = {**{name: loop[name] for name in LOOP_FIELDS}, **LOOP_DEFAULTS, **_config_defaults(PPOConfig)}
    given = _defaults("ppo")
    assert given["max_steps"] == 20 and loop["max_steps"] is None
    shared = [name for name in ppo if name in given and name != "max_grad_norm"]  # 0 on the command line: no clipping
    assert len(shared) > 15 and {n: given[n] for n in shared} == {n: ppo[n] for n in shared}


def test_study_defaults_are_study_configs():
    """One place for each: `study --batch-size` is the study's loop section's (4), not LoopConfig's 8."""
    from dpo3d.study.config import STUDY_LOOP_DEFAULTS, StudyConfig, study_loop

    loop = {name: value for name, value in dataclasses.asdict(study_loop()).items()
            if name in _defaults("study") and name != "out"}
    study, given = {**_config_defaults(StudyConfig), **loop}, _defaults("study")
    named = {"unseen": "unseen_limit", "workers": "math_workers"}
    task_defaults = {"train_prompts", "test_prompts"}  # None on the command line: gsm8k's, or the poems' with --task poem
    task_defaults.add("loss_args")  # None on the command line: no --loss-arg, StudyConfig's empty tuple
    pairs = {option: named.get(option, option) for option in given
             if named.get(option, option) in study and option not in task_defaults}
    assert len(pairs) > 25
    assert {option: given[option] for option in pairs} == {option: study[field] for option, field in pairs.items()}
    assert given["batch_size"] == STUDY_LOOP_DEFAULTS["batch_size"] == 4
    assert given["all_prompts"] is (not StudyConfig.same_prompts)


def test_the_judges_defaults_are_their_configs():
    from dpo3d.judges.llm_judge import LLMJudgeConfig
    from dpo3d.judges.math_judge import MathJudgeConfig

    math, llm = _defaults("judge math"), _defaults("judge llm")
    assert (math["lenient"], math["workers"], math["timeout"]) == (MathJudgeConfig.lenient, MathJudgeConfig.workers,
                                                                   MathJudgeConfig.timeout_s)
    assert (llm["concurrency"], llm["max_retries"], llm["max_tokens"], llm["timeout"]) == (
        LLMJudgeConfig.concurrency, LLMJudgeConfig.max_retries, LLMJudgeConfig.max_tokens, LLMJudgeConfig.timeout_s)


def test_judge_math_timeout_is_a_float_like_judge_llms():
    rows = {row.command: row for row in _vocabulary() if row.key == "--timeout"}
    assert rows["judge math"].type == rows["judge llm"].type == "<float range>"
