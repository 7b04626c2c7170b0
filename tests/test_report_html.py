"""The page `stitch report` writes, read as a browser reads it: real tables (a header row, no
Markdown separator as a row), pictures that exist, ROC panels few enough to tell apart, and the
run's own results at the top."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stitchkit.report import figures
from stitchkit.report.build import (
    Curve,
    Route,
    _distinct,
    _md_html,
    build_report,
    plan_panels,
    route_group,
)

from .conftest import run_stitch


class Page(HTMLParser):
    """Headings, images and tables (rows of (tag, text) cells) of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.images: list[str] = []
        self.tables: list[list[list[tuple[str, str]]]] = []
        self._cell: tuple[str, list[str]] | None = None
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = (tag, [])
        elif tag == "h2":
            self._in_h2, self._text = True, []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell:
            self.tables[-1][-1].append((self._cell[0], "".join(self._cell[1]).strip()))
            self._cell = None
        elif tag == "h2":
            self._in_h2 = False
            self.h2.append("".join(self._text))

    def handle_data(self, data: str) -> None:
        if self._cell:
            self._cell[1].append(data)
        if self._in_h2:
            self._text.append(data)


def ok(*args: object) -> str:
    res = run_stitch(*map(str, args))
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.fixture(scope="module")
def run(lite0_store: Path, lite2_store: Path, pneumonia_head: dict[str, Path],
        tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run as `stitch demo` leaves it, in small: a native route, a stitched route with its
    control (Lite2 through a map fitted on the same anchors), their table of routes."""
    from stitchkit.results import to_record

    d = tmp_path_factory.mktemp("html-run")
    (d / "scores").mkdir()
    (d / "results").mkdir()
    lite0, lite2 = shutil.copy(lite0_store, d / "lite0.h5"), shutil.copy(lite2_store, d / "lite2.h5")
    ok("fit", lite0, lite2, "--method", "ridge", "-o", d / "l0-l2.map")
    ok("fit", lite2, lite2, "--method", "ridge", "-o", d / "l2-l2.map")
    head, ids = pneumonia_head["head"], pneumonia_head["test_ids"]

    def classify(key: str, query: Path, *extra: object) -> tuple[list[str], dict[str, Any]]:
        argv = ["classify", str(query), "--prompts", "pneumonia", "--text-model", "minilm", "--head", str(head),
                "--ids", str(ids), "--bootstrap", "100", *map(str, extra), "-o", str(d / "scores" / f"{key}.csv")]
        result = json.loads(ok(*argv, "--json"))
        (d / "results" / f"classify-{key}.json").write_text(json.dumps(result))
        return argv, to_record("classify", result, command={"command": "stitch classify",
                                                            "params": {"ids_file": str(ids)}})

    native = classify("k-lite2-head", lite2)
    control = classify("k-lite2-ridge-head", lite2, "--map", d / "l2-l2.map")
    stitched = classify("k-lite0-ridge-head", lite0, "--map", d / "l0-l2.map")
    rows = [{"route": "(a) Lite2 native + head", "command": "stitch " + shlex.join(native[0]), **native[1]},
            {"route": "(b) Lite0 → Lite2 ridge + head", "command": "stitch " + shlex.join(stitched[0]),
             "control_command": "stitch " + shlex.join(control[0]), **stitched[1]}]
    (d / "results" / "demo-results.json").write_text(json.dumps(rows))
    return d


@pytest.fixture(scope="module")
def report(run: Path) -> dict[str, Any]:
    return build_report([run], run / "report")


def test_tables_render_as_tables_and_every_picture_exists(report: dict[str, Any]) -> None:
    page = Page()
    page.feed(Path(report["report"]).read_text(encoding="utf-8"))
    folder = Path(report["report"]).parent
    assert page.images and all((folder / src).is_file() for src in page.images)
    assert sorted(page.images) == sorted(Path(f).name for f in report["figures"])
    assert page.tables
    for table in page.tables:
        assert table and table[0] and all(tag == "th" for tag, _ in table[0])  # a header row
        assert all(tag == "td" for row in table[1:] for tag, _ in row)
        for row in table:  # the Markdown separator is no row
            assert not all(re.fullmatch(r"[-:|\s]+", text) for _, text in row), row
    # the run's own table of routes comes first, with each route's headline metric and macro AUC
    assert page.h2[0] == "Results: demo-results.json"
    header = [text for _, text in page.tables[0][0]]
    assert header[:3] == ["route", "dataset", "n"] and "auc_pneumonia [95% CI]" in header and "auc_macro" in header
    assert [row[0][1] for row in page.tables[0][1:]] == ["(a) Lite2 native + head", "(b) Lite0 → Lite2 ridge + head"]


def test_report_md_states_the_headline_and_macro_auc(run: Path, report: dict[str, Any]) -> None:
    md = Path(report["markdown"]).read_text(encoding="utf-8")
    rows = json.loads((run / "results" / "demo-results.json").read_text())
    for r in rows:
        m = r["metrics"]
        line = next(x for x in md.splitlines() if x.startswith(f"| {r['route']} |"))
        assert f"| {m['auc_pneumonia']:.3f} [{m['auc_pneumonia_ci_low']:.3f}, {m['auc_pneumonia_ci_high']:.3f}] |" in line
        assert f"| {m['auc_macro']:.3f} |" in line and f"| {m['accuracy']:.3f} |" in line
    assert "| route | dataset | n | auc_pneumonia [95% CI] | auc_macro | accuracy |" in md


def test_one_roc_figure_per_data_set_in_small_panels(run: Path, report: dict[str, Any]) -> None:
    [roc] = report["roc"]  # the three score files hold the same images: one data set, one figure
    dataset = json.loads((run / "results" / "demo-results.json").read_text())[0]["dataset"]
    assert roc["dataset"] == dataset and Path(roc["image"]).is_file()
    assert Path(roc["image"]).name.startswith("roc-00-") and re.sub(r"\W+", "-", dataset).strip("-") in roc["image"]
    assert [(p["title"], p["curves"]) for p in roc["panels"]] == [("native", 1), ("stitched", 2)]  # route + control
    assert all(p["curves"] <= figures.ROC_PANEL_MOST for p in roc["panels"])


# -- the pieces, without models ---------------------------------------------------------------------

DEMO_ROUTES = ["(a) Lite2 native + token head", "(a) Lite2 native + global head",
               "(b) Lite0 → Lite2 token map + token head", "(b) Lite0 → Lite2 ridge affine + global head",
               "(c) Lite2 → MiniLM text space, cosine instead of the head",
               "(d) Lite0 → MiniLM text space, cosine (label-derived captions)",
               *(f"(e) {pairs}: {how}" for pairs in ("covid notes", "covid notes + adaptation")
                 for how in ("token head, Lite2 native", "global head, Lite2 native", "cosine, Lite2 → MiniLM",
                             "token head, Lite0 → Lite2 token map", "global head, Lite0 → Lite2 ridge",
                             "cosine, Lite0 → Lite2 token map → MiniLM"))]


def _curves(routes: list[str], rng: np.random.Generator) -> list[Curve]:
    y = rng.random(200) < 0.4
    out = []
    for k, route in enumerate(routes):
        query = "lite0" if "Lite0" in route else "lite2"
        out.append(Curve(Route(route, route_group(route), "kermany-test", 3, k, query=query), "pneumonia", "ids",
                         "truth", y, y + rng.normal(size=200)))
        if query == "lite0":  # each stitched route beside its control
            out.append(Curve(Route(f"control of {route}", route_group(route), "kermany-test", 3, k + 0.5,
                                   control_of=route, query="lite2"), "pneumonia", "ids", "truth", y,
                             y + rng.normal(size=200)))
    return out


def test_panels_hold_at_most_eight_curves_grouped_as_the_demo(tmp_path: Path) -> None:
    curves = _curves(DEMO_ROUTES, np.random.default_rng(0))
    assert len(curves) > 2 * figures.ROC_PANEL_MOST
    panels = plan_panels(curves)
    assert [t for t, _ in panels] == ["native", "stitched", "zero-shot: covid notes · lite2 queries",
                                      "zero-shot: covid notes · lite0 queries",
                                      "zero-shot: covid notes + adaptation · lite2 queries",
                                      "zero-shot: covid notes + adaptation · lite0 queries"]
    assert sorted(c.route.label for _, p in panels for c in p) == sorted(c.route.label for c in curves)
    for _, panel in panels:
        assert len(panel) <= figures.ROC_PANEL_MOST
        labels = {c.route.label for c in panel}
        assert all(c.route.control_of in labels for c in panel if c.route.control_of)  # never apart
    drawn = [figures.RocPanel(t, [figures.RocCurve(c.route.label, c.y, c.score, bool(c.route.control_of)) for c in p])
             for t, p in panels]
    path, counts = figures.roc_panels(drawn, tmp_path / "roc.png", title="every route")
    assert path.is_file() and counts == [len(p) for _, p in panels]
    # one group too big for a panel and all of one query model: split evenly
    many = [Curve(Route(f"route {k}", "routes", "d", 1, k), "c", "ids", "truth", curves[0].y, curves[k].score)
            for k in range(19)]
    assert [len(p) for _, p in plan_panels(many)] == [7, 7, 5]
    with pytest.raises(ValueError, match="at most 8"):
        figures.roc_panels([figures.RocPanel("too many", drawn[0].curves * 9)], tmp_path / "x.png", title="")


def test_markdown_tables_become_html_tables() -> None:
    lines = ["| route | AUC |", "|---|---|", "| a \\| b | 0.912 |", "", "| x | y |", "| :--- | ---: |", "| 1 | 2 |"]
    page = Page()
    page.feed("\n".join(_md_html(lines)))
    assert page.tables == [[[("th", "route"), ("th", "AUC")], [("td", "a | b"), ("td", "0.912")]],
                           [[("th", "x"), ("th", "y")], [("td", "1"), ("td", "2")]]]


def test_maps_of_one_name_are_told_apart() -> None:
    paths = [Path("run1/l0-l2.map"), Path("run2/l0-l2.map"), Path("run2/other.map")]
    labels = ["lite0 → lite2, ridge, 400 anchors\nl0-l2.map"] * 2 + ["lite0 → lite2, ridge, 400 anchors\nother.map"]
    out = _distinct(labels, paths)
    assert len(set(out)) == 3 and out[0].endswith("(run1)") and out[2] == labels[2]
