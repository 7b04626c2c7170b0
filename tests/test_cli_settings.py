"""Each setting declared once: every option's default is the library's, and only a handful of
options (those only the command line has) write a default of their own."""

from __future__ import annotations

from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner
from stitchkit.cli.main import COMMANDS, cli
from stitchkit.cli.settings import SettingOption, settings_options, take_settings

from stitchkit.devices import ENGINES
from stitchkit.errors import UsageError
from stitchkit.inputs.grey import DEFAULT_GREY_RANGE
from stitchkit.maps.api import MUTUAL_KNN_K
from stitchkit.settings import Range, check_settings, setting

#: Options with a default no library object has: where a command's own output goes, how it prints.
CLI_ONLY_DEFAULTS = {
    ("demo", "out"): "demo-out",
    ("report", "title"): "stitchkit report",
    ("results", "digits"): 3,
    ("sweep", "output"): "sweep.csv",
}


#: Options whose default is a library constant rather than an options object's field.
LIBRARY_CONSTANTS = {
    ("embed", "grey_range"): DEFAULT_GREY_RANGE,
    ("embed", "engine"): ENGINES[0],
    ("fit", "knn_k"): MUTUAL_KNN_K,
}


def _commands() -> list[tuple[str, click.Command]]:
    found = []
    for name in COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        found.append((name, command))
        if isinstance(command, click.Group):
            found.extend((f"{name} {sub}", command.get_command(click.Context(command), sub))
                         for sub in command.list_commands(click.Context(command)))
    return found


def _is_empty(default: object) -> bool:
    """No default: None, False, empty, a factory, or click's own "unset" marker."""
    return default in (None, False, (), []) or callable(default) or type(default).__name__ == "Sentinel"


@pytest.mark.parametrize(("path", "command"), _commands(), ids=[p for p, _ in _commands()])
def test_each_option_default_is_the_librarys(path: str, command: click.Command) -> None:
    for param in command.params:
        default = param.get_default(click.Context(command), call=False)
        if isinstance(param, SettingOption):
            assert default == param.library_default or (
                isinstance(param.library_default, tuple) and default == ",".join(map(str, param.library_default))
            ), f"{path} {param.opts[-1]}: {default!r} is not {param.owner.__name__}.{param.field.name}'s"
            assert param.name.startswith(param.field.name), f"{path} {param.opts[-1]} names another word"
            continue
        if isinstance(param, click.Option) and not param.is_flag and not _is_empty(default):
            assert {**CLI_ONLY_DEFAULTS, **LIBRARY_CONSTANTS}.get((path, param.name)) == default, (
                f"{path} {param.opts[-1]} writes its own default {default!r}: declare it with "
                "stitchkit.settings.setting on the library's options object")


def test_the_cli_only_defaults_are_few() -> None:
    assert len(CLI_ONLY_DEFAULTS) <= 10


@dataclass(frozen=True)
class _Example:
    count: int = setting(3, "How many.", within=Range(1))
    mode: str | None = setting(None, "Which.", choices=("a", "b"), none="none")
    items: tuple[int, ...] = setting((1, 2), "Which ones.", within=Range(0))
    kept: bool = setting(True, "Keep them.")

    def __post_init__(self) -> None:
        check_settings(self)


@click.command()
@settings_options(_Example)
def _example(**settings: object) -> None:
    click.echo(repr(take_settings(_Example, settings)))


def test_generated_options_parse_back_into_the_library_object() -> None:
    run = CliRunner().invoke
    assert run(_example, []).output.strip() == repr(_Example())
    out = run(_example, ["--count", "5", "--mode", "b", "--items", "4,0", "--no-kept"]).output.strip()
    assert out == repr(_Example(count=5, mode="b", items=(4, 0), kept=False))
    assert run(_example, ["--mode", "none"]).output.strip() == repr(_Example(mode=None))
    for bad in (["--count", "0"], ["--mode", "c"], ["--items", "1,x"]):
        assert run(_example, bad).exit_code == 2


def test_the_library_refuses_what_the_declaration_refuses() -> None:
    with pytest.raises(UsageError, match="count must be ≥ 1, got 0"):
        _Example(count=0)
    with pytest.raises(UsageError, match="mode takes one of a, b, got 'c'"):
        _Example(mode="c")
    with pytest.raises(UsageError, match="items must be ≥ 0, got -1"):
        _Example(items=(2, -1))
