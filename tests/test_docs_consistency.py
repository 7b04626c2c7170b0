"""The README and docs/ state only what committed results files hold, and link only to what exists.

A generated block is
    <!-- generated: stitch results FILE... [options] -->
    ...the table...
    <!-- end generated -->
and must equal what that command prints now. The tests only compare, never write; to rewrite
the blocks from the committed results files (then review the diff and commit it):

    python -m tests.test_docs_consistency --write
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- generated: (stitch [^\n]*?) -->\n)(.*?)(<!-- end generated -->)", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# claims of earlier READMEs that no code in the repository produces
STALE = ["5-fold CV", "C by 5-fold", "measured by hand", "600-image training subset"]
WRITE = "python -m tests.test_docs_consistency --write"


def _run(command: str) -> str:
    from stitchkit.cli.main import cli

    argv = shlex.split(command)[1:]
    res = CliRunner().invoke(cli, argv, catch_exceptions=False, env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    return res.output


def _blocks(page: Path) -> list[re.Match]:
    return list(BLOCK.finditer(page.read_text(encoding="utf-8")))


def test_readme_has_a_generated_results_table() -> None:
    blocks = _blocks(ROOT / "README.md")
    assert blocks, "the README's results table must be generated from a committed results file"
    for m in blocks:
        for arg in shlex.split(m.group(2))[2:]:
            if arg.endswith(".json"):
                assert (ROOT / arg).is_file(), f"{arg} is not committed"


def _at_root(fn: Callable[[], str | list[str]]) -> str | list[str]:
    """``fn()`` run from the repository root (the commands name results files relative to it)."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return fn()
    finally:
        os.chdir(cwd)


def stale_blocks(text: str, run: Callable[[str], str] = _run) -> list[str]:
    """The commands of the generated blocks in ``text`` whose table differs from what the
    command prints now (run from the repository root)."""
    return _at_root(lambda: [m.group(2) for m in BLOCK.finditer(text) if m.group(3) != run(m.group(2))])


def regenerated(text: str, run: Callable[[str], str] = _run) -> str:
    """``text`` with every generated block replaced by what its command prints now."""
    return _at_root(lambda: BLOCK.sub(lambda m: m.group(1) + run(m.group(2)) + m.group(4), text))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_generated_blocks_match_their_results(page: Path) -> None:
    # Always the committed page against a fresh run: writing is `main(["--write"])`, never a test.
    stale = stale_blocks(page.read_text(encoding="utf-8"))
    assert not stale, (
        f"{page.name}: the table under {', '.join(f'`{c}`' for c in stale)} disagrees with its "
        f"results file; regenerate with `{WRITE}`, review the diff and commit it")


def test_a_stale_table_is_detected() -> None:
    """The comparison itself: a page whose table is not the command's output is reported, and
    the same page with the fresh table is not."""
    command = _blocks(ROOT / "README.md")[0].group(2)
    fresh = _at_root(lambda: _run(command))
    rows = fresh.splitlines(keepends=True)
    wrong = "".join(rows[:-1]) + "| a row no results file holds | 0.000 |\n"
    page = "# A page\n\n<!-- generated: {c} -->\n{t}<!-- end generated -->\n"
    assert stale_blocks(page.format(c=command, t=wrong)) == [command]
    assert stale_blocks(page.format(c=command, t=fresh)) == []
    assert regenerated(page.format(c=command, t=wrong)) == page.format(c=command, t=fresh)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_stale_claims(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    for claim in STALE:
        assert claim not in text, f"{page.name} still says {claim!r}"


def test_readme_is_short() -> None:
    # a newcomer reads it in ten minutes; reference material lives in docs/
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150


def test_every_command_is_in_the_reference() -> None:
    from stitchkit.cli.main import COMMANDS

    reference = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [name for name in COMMANDS if f"stitch {name}" not in reference]
    assert not missing, f"docs/cli.md never shows: {', '.join(missing)}"



# -- docs/head.md's levers tables: measured with the v1 head, reproduced by scripts that pin it --
# The head before commit cfd1632 (issue 22): what every head-training call of these scripts must
# state on its command line, so that a change of `stitch head train`'s defaults does not change
# what "reproduced by" runs. Settings added since take the values heads had then.
V1_SCRIPTS = ["examples/token-head/levers.sh", "examples/token-head/run.sh", "examples/zero-shot/run.sh"]
V1_SETTINGS = {"width": 64, "layers": 1, "heads": 4, "dropout": 0.0, "residual": False, "init": "torch",
               "lr": 1e-3, "weight_decay": 0.01, "warmup": 0.05, "min_steps": 0}
# stated too, with the values each table gives; validation after every epoch: candidates = epochs
V1_SCHEDULE = ["batch_size", "epochs", "candidates", "patience", "val_fraction", "seed"]
_SUBSHELL_ECHO = re.compile(r"\$\([^()]*?\becho ([^()]*)\)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*)|/([^/}]*)/([^}]*))?\}|\$(\w+)")


def _expand(text: str, env: dict[str, str]) -> str:
    """The shell's expansion of ``$X``, ``${X}``, ``${X:-default}``, ``${X/pattern/word}`` and
    ``$(... echo WORDS)`` (its WORDS); a variable the script does not assign (a loop's, an
    argument) becomes "1"."""
    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(5)
        if name in env:
            out = _expand(env[name], env)
        else:
            out = m.group(2) if m.group(2) is not None else "1"
        if m.group(3) is not None:
            out = out.replace(m.group(3), _expand(m.group(4), env), 1)
        return out

    return _VARIABLE.sub(value, _SUBSHELL_ECHO.sub(lambda m: m.group(1), text))


def head_train_calls(script: str) -> list[list[str]]:
    """The arguments of every `stitch head train` in a shell script, expanded as bash would."""
    lines = [ln for ln in script.replace("\\\n", " ").splitlines() if not ln.lstrip().startswith("#")]
    env: dict[str, str] = {}
    calls = []
    for line in lines:
        assigned = re.fullmatch(r"\s*(\w+)=(\"[^\"]*\"|\S*)\s*", line)
        if assigned:
            env[assigned.group(1)] = assigned.group(2).strip('"')
        for part in line.split("head train ")[1:]:
            args = shlex.split(_expand(part, env))
            ends = [i for i, a in enumerate(args) if a in (";", "&&", "||", "|", ">", "done")]
            calls.append(args[: ends[0]] if ends else args)
    return calls


def unpinned(args: list[str]) -> list[str]:
    """What a `stitch head train ARGS` leaves to the defaults of the v1 settings, or states otherwise."""
    from click.core import ParameterSource
    from stitchkit.cli.head import train

    ctx = train.make_context("train", list(args))
    wrong = [f"--{n.replace('_', '-')} (not given)" for n in [*V1_SETTINGS, *V1_SCHEDULE]
             if ctx.get_parameter_source(n) != ParameterSource.COMMANDLINE]
    wrong += [f"--{n.replace('_', '-')} {ctx.params[n]} (v1: {v})" for n, v in V1_SETTINGS.items()
              if ctx.params[n] != v]
    if ctx.params["candidates"] != ctx.params["epochs"]:
        wrong.append(f"--candidates {ctx.params['candidates']} (v1 validates every epoch: --epochs {ctx.params['epochs']})")
    return wrong


@pytest.mark.parametrize("script", V1_SCRIPTS)
def test_levers_scripts_pin_the_v1_head_settings(script: str) -> None:
    text = (ROOT / script).read_text(encoding="utf-8")
    calls = head_train_calls(text)
    code = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    assert calls and len(calls) == sum(ln.count("head train ") for ln in code), f"{script}: head train calls not all read"
    for args in calls:
        wrong = unpinned(args)
        assert not wrong, (f"{script}: `stitch head train {' '.join(args)}` does not pin the settings "
                           f"docs/head.md's figures were measured with: {', '.join(wrong)}")


def test_a_dropped_pin_is_detected() -> None:
    script = (ROOT / "examples/token-head/levers.sh").read_text(encoding="utf-8")
    assert not unpinned(head_train_calls(script)[0])
    for pin, worse in [("--no-residual ", ""), ("--init torch ", ""), ("--dropout 0 ", "--dropout 0.1 "),
                       ("--candidates $E ", "--candidates 4 ")]:
        assert pin in script
        assert unpinned(head_train_calls(script.replace(pin, worse, 1))[0]), pin


def test_levers_py_trains_with_the_v1_head_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """levers.py's heads (the (e), (f) rows) are built in Python: the same pins, stated."""
    import ast
    import importlib.util
    from types import SimpleNamespace

    import stitchkit.head

    path = ROOT / "examples/token-head/levers.py"
    stated = {kw.arg for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
              if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("HeadConfig", "TrainConfig")
              for kw in node.keywords}
    missing = (set(V1_SETTINGS) | set(V1_SCHEDULE)) - {"seed"} - stated
    assert not missing, f"levers.py leaves {sorted(missing)} to the defaults"
    seen = {}
    monkeypatch.setattr(stitchkit.head, "train_head",
                        lambda *a, **kw: seen.update(kw) or SimpleNamespace(to_dict=dict))
    spec = importlib.util.spec_from_file_location("levers", path)
    levers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(levers)
    levers.train("i.h5", "t.h5", str(tmp_path / "h.head"), 0.5, 1.0, str(tmp_path / "r.json"))
    cfg = seen["config"]
    got = {n: getattr(cfg.head if hasattr(cfg.head, n) else cfg, n) for n in V1_SETTINGS}
    assert got == V1_SETTINGS and cfg.candidates == cfg.epochs
    assert (cfg.token_dropout, cfg.token_coarsen, cfg.seed) == (0.5, 1.0, 0)


def main(argv: list[str] | None = None) -> int:
    """``--write``: rewrite every stale generated block; without it, list them (exit 1 if any)."""
    parser = argparse.ArgumentParser(prog="python -m tests.test_docs_consistency", description=main.__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the stale blocks in place")
    args = parser.parse_args(argv)
    stale = 0
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        commands = stale_blocks(text)
        for command in commands:
            print(f"{page.relative_to(ROOT)}: {command}" + (" (rewritten)" if args.write else " (stale)"))
        stale += len(commands)
        if commands and args.write:
            page.write_text(regenerated(text), encoding="utf-8")
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    sys.exit(main())
