"""Every command's --help: it opens, shows an Examples block naming the command, and the
examples that need no input files run as printed."""

from __future__ import annotations

import shlex

import click
import pytest
from click.testing import CliRunner
from stitchkit.cli.main import COMMANDS, cli


def _commands() -> list[tuple[str, ...]]:
    """Every command path: top-level commands and the subcommands of groups."""
    paths: list[tuple[str, ...]] = []
    for name in COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        paths.append((name,))
        if isinstance(command, click.Group):
            paths.extend((name, sub) for sub in command.list_commands(click.Context(command)))
    return paths


def help_examples(text: str) -> list[str]:
    """The lines under 'Examples:' of a help text."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Examples:")
    out = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        out.append(line.strip())
    return out


def test_every_command_is_listed_and_covered() -> None:
    res = CliRunner().invoke(cli, ["--help"])
    assert res.exit_code == 0
    for name in COMMANDS:
        assert name in res.output
    assert len(_commands()) > len(COMMANDS)  # groups (head, anchors) add their subcommands


@pytest.mark.parametrize("path", _commands(), ids=" ".join)
def test_help_opens_and_has_examples_of_itself(path: tuple[str, ...]) -> None:
    res = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    command = cli
    for part in path:
        command = command.get_command(click.Context(command), part)
    if isinstance(command, click.Group):
        assert "Commands:" in res.output
        return
    examples = help_examples(res.output)
    assert examples, f"stitch {' '.join(path)} --help has no examples"
    assert any(e.startswith(f"stitch {' '.join(path)}") for e in examples), examples
    named = [shlex.split(e.split("stitch ", 1)[1])[0] for e in examples if "stitch " in e]
    assert set(named) <= set(COMMANDS), named  # other lines are the tools a pipeline hands on to


@pytest.mark.parametrize("example", ["stitch models", "stitch models --json"])
def test_examples_without_inputs_run(example: str) -> None:
    res = CliRunner().invoke(cli, shlex.split(example)[1:])
    assert res.exit_code == 0, res.output
    assert "lite0" in res.output


MEANINGS = {  # meaning -> (the one option, commands that have the meaning)
    "model": ("--model", [("embed",)]),
    "text model": ("--text-model", [("head", "captions"), ("classify",)]),
    "row subset": ("--ids", [("fit",), ("sweep",), ("classify",), ("head", "train")]),
    "output replacement": ("--overwrite", [("embed",), ("export",), ("import",), ("fit",)]),
    "space mismatch": ("--force-space", [("apply",), ("classify",)]),
    "run name": ("--name", [("fit",), ("sweep",), ("classify",)]),
}


def _command(path: tuple[str, ...]) -> click.Command:
    command = cli
    for part in path:
        command = command.get_command(click.Context(command), part)
    return command


def _visible_options(command: click.Command) -> set[str]:
    return {opt for p in command.params if isinstance(p, click.Option) and not p.hidden for opt in p.opts}


def test_one_vocabulary_across_commands() -> None:
    from stitchkit.cli.vocabulary import VOCABULARY

    assert {m: o for m, (o, _) in MEANINGS.items()} == VOCABULARY
    for meaning, (option, paths) in MEANINGS.items():
        for path in paths:
            assert option in _visible_options(_command(path)), f"stitch {' '.join(path)} lacks {option} ({meaning})"
    # An old name is gone from every command's help: only hidden aliases remain.
    for path in _commands():
        visible = _visible_options(_command(path))
        assert not visible & {"--anchors", "--force"}, (path, visible & {"--anchors", "--force"})
        if path != ("embed",):
            assert "-m" not in visible, path


def test_an_old_name_still_works_for_one_version_with_a_deprecation_line(tmp_path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("a\n")
    res = CliRunner().invoke(cli, ["fit", "a.h5", "b.h5", "--anchors", str(ids), "--ids", str(ids), "--dry-run"])
    assert res.exit_code == 2 and "give --ids only" in res.output
    res = CliRunner().invoke(cli, ["fit", str(tmp_path / "missing.h5"), "b.h5", "--anchors", str(ids), "--dry-run"])
    assert "--anchors is deprecated" in res.output and "use --ids" in res.output
