"""Options derived from the config dataclasses: one field in LoopConfig/LoRAConfig is one option of
every trainer, with the field's default and help, and parses back into the config."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dpo3d.config.fields import option, settings
from dpo3d.models.lora import LoRAConfig
from dpo3d.training.config import LoopConfig
from dpo3d.training.rm import RM_LR
from dpo3d.training.sft import SFT_LR
from dpo3d_cli import training_options as t
from dpo3d_cli.app import app
from dpo3d_cli.config_options import OptionGroup, with_options

#: where a trainer's default differs from LoopConfig's, stated by the command's OptionGroup
COMMAND_DEFAULTS = {"sft": {"lr": SFT_LR}, "train-rm": {"lr": RM_LR}, "train-dpo": {}}


def command_options(name: str) -> dict:
    command = typer.main.get_command(app).commands[name]
    return {param.name: param for param in command.params if param.param_type_name == "option"}


@pytest.mark.parametrize("command", sorted(COMMAND_DEFAULTS))
def test_every_loop_and_lora_field_is_an_option_with_its_default_and_help(command):
    found = command_options(command)
    for group in (t.LOOP, t.LORA):
        for setting in settings(group.cls):
            param = found[group.param_name(setting)]
            expected = COMMAND_DEFAULTS[command].get(setting.name, setting.default) if group is t.LOOP else setting.default
            assert param.default == expected, (command, setting.name)
            assert param.help == setting.help, (command, setting.name)
            assert tuple(param.opts) + tuple(param.secondary_opts) == tuple(
                name for flag in setting.flags(group.prefix) for name in flag.split("/")
            ), (command, setting.name)


def test_trainers_give_a_shared_option_one_default_unless_the_command_says_so():
    tables = {name: command_options(name) for name in COMMAND_DEFAULTS}
    for setting in settings(LoopConfig):
        defaults = {name: table[setting.name].default for name, table in tables.items()}
        stated = {name: COMMAND_DEFAULTS[name].get(setting.name, setting.default) for name in tables}
        assert defaults == stated, setting.name


def test_the_weight_decay_field_reached_every_trainer_and_the_loop():
    # LoopConfig.weight_decay had no flag before options were derived; the field alone gives it one
    for name in ("sft", "train-dpo", "train-rm"):
        assert "--weight-decay" in command_options(name)["weight_decay"].opts
    loop = t.loop_config({"out": Path("run"), "weight_decay": 0.05, "max_grad_norm": 0.0})
    assert loop.weight_decay == 0.05 and loop.max_grad_norm is None


def test_a_new_field_is_a_new_option_parsed_back_into_the_config(tmp_path):
    @dataclass
    class Grown(LoopConfig):
        adam_epsilon: float = option(1e-8, "AdamW's ε.")

    group = OptionGroup(Grown)
    seen = {}
    demo = typer.Typer()

    @demo.command()
    @with_options(group, t.LORA)
    def train(ctx: typer.Context, out: Path = typer.Option(..., "--out")) -> None:
        seen["loop"] = group.build(ctx.params, out=out)
        seen["lora"] = t.lora_config(ctx.params)

    result = CliRunner().invoke(demo, ["--out", str(tmp_path), "--adam-epsilon", "1e-6", "--lr", "3e-4",
                                       "--lora-r", "4", "--merge"])
    assert result.exit_code == 0, result.output
    assert seen["loop"].adam_epsilon == 1e-6 and seen["loop"].lr == 3e-4 and seen["loop"].batch_size == 8
    assert seen["loop"].to_json()["adam_epsilon"] == 1e-6  # run_config.json records it
    assert seen["lora"] == LoRAConfig(r=4, merge=True)
    shown = CliRunner().invoke(demo, ["--help"], terminal_width=200).output
    assert "--adam-epsilon" in shown and "AdamW's ε." in shown


def test_a_command_cannot_declare_a_config_option_twice():
    def train(lr: float = 1.0) -> None:
        pass

    with pytest.raises(TypeError, match="lr"):
        with_options(t.LOOP)(train)


def test_ppo_and_study_take_the_loop_fields_they_share_from_loop_config():
    ppo = command_options("ppo")
    for name in ("seed", "log_every", "save_every", "max_grad_norm", "report_to", "keep_host_memory"):
        (setting,) = [s for s in settings(LoopConfig) if s.name == name]
        assert (ppo[name].default, ppo[name].help) == (setting.default, setting.help), name
    from dpo3d.study.config import STUDY_LOOP_DEFAULTS, StudyConfig

    study = command_options("study")
    assert study["batch_size"].default == STUDY_LOOP_DEFAULTS["batch_size"] == 4  # the study's, stated beside StudyConfig
    assert StudyConfig(out=Path("s"), model="m").loop.batch_size == 4
    for name in ("gradient_checkpointing", "keep_host_memory", "report_to", "weight_decay", "lora_r"):
        assert name in study, name  # the options study cells dropped before the loop was one section
    assert replace(t.LOOP, only=frozenset({"seed"})).settings()[0].name == "seed"


def _commands(typer_app=app, prefix=""):
    """Every subcommand as (name, the function typer calls, its click options by parameter name)."""
    click_app = typer.main.get_command(typer_app)
    for info in typer_app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        params = {p.name: p for p in click_app.commands[name].params if p.param_type_name == "option"}
        yield prefix + name, info.callback, params
    for group in typer_app.registered_groups:
        yield from _commands(group.typer_instance, f"{prefix}{group.name} ")


def test_every_derived_option_has_its_fields_default_and_help_unless_its_command_group_says_otherwise():
    """One statement per setting: the field's default and help, or the override its group states beside
    the command's config (PPO's max_steps, the study's lr); never a third value typed into a command."""
    derived = set()
    for name, callback, params in _commands():
        for group in getattr(callback, "option_groups", ()):
            for setting in group.settings():
                param = params[group.param_name(setting)]
                assert param.default == group.defaults.get(setting.name, setting.default), (name, setting.name)
                assert param.help == group.helps.get(setting.name, setting.help), (name, setting.name)
                derived.add(name)
    assert {"sft", "train-dpo", "train-rm", "ppo", "study", "diagnose"} <= derived


def test_a_0_option_is_the_fields_none_where_the_field_says_so():
    from dpo3d.scoring.forward import LogprobOptions
    from dpo3d_cli.train_dpo import LOGPROBS

    assert LOGPROBS.build({"head_chunk": 0, "packing": False}) == LogprobOptions(head_chunk=None, packing=False)
    assert LOGPROBS.build({"head_chunk": 256, "packing": True}) == LogprobOptions(head_chunk=256)
    assert t.loop_config({"out": Path("r"), "max_grad_norm": 0.0}).max_grad_norm is None
