"""The README and docs/ state only what committed results files hold, and link only to what exists.

A generated block is
    <!-- generated: stitch results FILE... [options] -->
    ...the table...
    <!-- end generated -->
and must equal what that command prints now. STITCHKIT_WRITE_DOCS=1 rewrites the blocks instead.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- generated: (stitch [^\n]*?) -->\n)(.*?)(<!-- end generated -->)", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# claims of earlier READMEs that no code in the repository produces
STALE = ["5-fold CV", "C by 5-fold", "measured by hand", "600-image training subset"]


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


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_generated_blocks_match_their_results(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    if os.environ.get("STITCHKIT_WRITE_DOCS"):
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            new = BLOCK.sub(lambda m: m.group(1) + _run(m.group(2)) + m.group(4), text)
        finally:
            os.chdir(cwd)
        page.write_text(new, encoding="utf-8")
        text = new
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        for m in BLOCK.finditer(text):
            assert m.group(3) == _run(m.group(2)), (
                f"{page.name}: the table under `{m.group(2)}` disagrees with its results file; "
                "regenerate with STITCHKIT_WRITE_DOCS=1 pytest tests/test_docs_consistency.py")
    finally:
        os.chdir(cwd)


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
