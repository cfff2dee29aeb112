"""Options with a fixed set of values: `--help` lists them, and a bad one in a config file is one
line naming its field before anything is written. The sets come from the modules that own them."""
from __future__ import annotations

import re

import pytest
import yaml

from clihelpers import run_error
from fakedata import write_mnist
from n2n.arch.groups import CRITERIA
from n2n.arch.rewrite import INIT_MODES
from n2n.checkpoint import save_checkpoint
from n2n.cli import build_parser, main
from n2n.config import METHODS, STAGES, SearchConfig, from_dict
from n2n.distill.losses import LOSSES
from n2n.errors import ConfigError
from n2n.export import FORMATS
from n2n.models import create_model
from n2n.search.executors import EXECUTORS
from n2n.search.reinforce import ALGORITHMS
from n2n.search.reward import REWARDS

COMPRESS_CHOICES = {
    "--method": METHODS, "--algorithm": ALGORITHMS, "--reward": ("auto", *REWARDS), "--init": INIT_MODES,
    "--keep-channels": CRITERIA, "--executor": ("auto", *EXECUTORS),
}


def help_text(command: str, capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "100")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def listed_values(text: str, flag: str) -> list[str]:
    """The values `--help` shows for `flag`, as argparse writes a choice option: --flag {a,b,c}."""
    shown = re.findall(rf"{re.escape(flag)} \{{([^}}]*)\}}", text)
    assert shown, f"{flag} lists no values in --help"
    assert len(set(shown)) == 1, f"{flag} lists different values in usage and options: {shown}"
    return shown[0].split(",")


def test_compress_help_lists_every_value_of_every_choice_option(capsys, monkeypatch):
    text = help_text("compress", capsys, monkeypatch)
    for flag, values in COMPRESS_CHOICES.items():
        assert listed_values(text, flag) == list(values), flag
    stages_help = re.search(r"--stages STAGES\s+(.*?)\n  --", text, re.DOTALL).group(1)
    assert all(stage in stages_help for stage in STAGES)


def test_export_help_lists_its_formats(capsys, monkeypatch):
    assert listed_values(help_text("export", capsys, monkeypatch), "--format") == list(FORMATS) == [
        "onnx", "torchscript", "exported"]


def test_no_compress_flag_of_a_config_choice_goes_without_its_values():
    from n2n.config import CHOICES

    commands = next(action for action in build_parser()._actions if action.dest == "command")
    compress = commands.choices["compress"]
    flags = {action.dest: action for action in compress._actions}
    for field, values in CHOICES.items():
        assert tuple(flags[field].choices) == values, field


@pytest.mark.parametrize("section", ["proxy", "final"])
def test_a_bad_distillation_loss_is_refused_by_validation_naming_its_field(section):
    with pytest.raises(ConfigError, match=rf"^{section}\.loss must be one of {', '.join(LOSSES)}, got 'kd2'$"):
        from_dict(SearchConfig, {section: {"loss": "kd2"}}).validate()


def test_a_bad_nested_loss_in_a_config_file_is_one_line_and_writes_no_run_folder(tmp_path, capsys):
    write_mnist(tmp_path / "mnist", n_train=40, n_test=10)
    teacher = tmp_path / "teacher.pt"
    kwargs = {"in_channels": 1, "num_classes": 10, "width_mult": 0.25}
    save_checkpoint(teacher, create_model("conv4", **kwargs), arch={"name": "conv4", "kwargs": kwargs, "rewrites": []},
                    meta={"dataset": "mnist", "in_channels": 1, "num_classes": 10, "image_size": 28})
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"epochs_per_stage": 1, "proxy": {"loss": "kd2"}}))
    out = tmp_path / "run"
    err = run_error(["--quiet", "compress", "--teacher", str(teacher), "--data-dir", str(tmp_path / "mnist"),
                     "--config", str(config), "--out", str(out)], capsys)
    assert "proxy.loss" in err and "'kd2'" in err and "l2, kd" in err
    assert not out.exists()
