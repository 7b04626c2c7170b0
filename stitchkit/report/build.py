"""`stitch report PATH...`: figures and a page for whatever files a run left, by their content.

Each path is a file or a folder (searched recursively). A file is recognised by what it holds,
never by its name:

- HDF5 with ``embeddings``: an embedding store; HDF5 with ``format = stitchkit.scores``: a
  score file of `stitch classify`;
- a safetensors file with a stitchkit header: a map (held-out metrics, anchor plan) or a head
  (loss curve from the training history in its metadata);
- CSV with ``method`` and ``n_anchors`` columns: a sweep table (curves with error bars); CSV
  with ``id``, ``label`` and ``predicted``: a score file (read by
  :func:`stitchkit.zeroshot.score_writer.read_scores`, beside its writer, with its
  ``NAME.csv-metadata.json``, which is not drawn on its own);
- JSON: a result record or raw `--json` output (classify, fit, sweep, head); a list of
  records (``stitch demo``'s results/demo-results.json, ``stitch benchmark``'s records.json)
  becomes the results table; ``stitch benchmark``'s benchmark.json (``schema =
  stitchkit.benchmark/1``) gives the macro AUC of every data set with its interval and each
  finding's AUC, beside the benchmark's table.

A file of a format version this stitchkit does not read is refused when named, and listed as
skipped when found in a folder.

Stores are drawn where a map's source and target spaces are both present over the same ids:
each map's output against the native target (cosine histogram, PCA).
"""

from __future__ import annotations

import csv
import html
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..fileio import atomic_output
from ..formats import (
    BENCHMARK,
    COMMAND_OUTPUT,
    EXPLAIN,
    HEAD,
    LEARNING_CURVE,
    MAP,
    RECORD,
    RECORDS,
    SCORES_CSV,
    SCORES_H5,
    STORE,
    SWEEP_TABLE,
    Identified,
)
from ..inspect import identify
from . import figures

SKIP_SUFFIXES = {".png", ".jpg", ".jpeg", ".html", ".md", ".txt", ".log", ".partial", ".yaml", ".jsonl"}


@dataclass
class Found:
    """The files of a run, sorted by what they hold."""

    stores: list[Path] = field(default_factory=list)
    maps: list[Path] = field(default_factory=list)
    heads: list[Path] = field(default_factory=list)
    sweeps: list[Path] = field(default_factory=list)
    scores: list[Path] = field(default_factory=list)
    results: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    tables: list[tuple[Path, list[dict[str, Any]]]] = field(default_factory=list)
    benchmarks: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    curves: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)  # learning curves
    explains: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)  # stitch explain's JSON
    skipped: list[str] = field(default_factory=list)


@dataclass
class Section:
    title: str
    image: Path
    caption: str
    numbers: list[str]  # Markdown lines (usually a table) stating what the figure shows
    beside: bool = False  # the page puts the numbers beside the figure (where the width allows)


#: What the report does with each kind of file (stitchkit.formats.identify); other kinds are not drawn.
DRAWN = {STORE: "stores", MAP: "maps", HEAD: "heads", SWEEP_TABLE: "sweeps", SCORES_H5: "scores",
         SCORES_CSV: "scores", RECORD: "results", COMMAND_OUTPUT: "results", RECORDS: "tables",
         BENCHMARK: "benchmarks", LEARNING_CURVE: "curves", EXPLAIN: "explains"}
JSON_KINDS = {RECORD, COMMAND_OUTPUT, RECORDS, BENCHMARK, LEARNING_CURVE, EXPLAIN}


def _identify(path: Path) -> Identified | None:
    """What a file holds, from its content (stitchkit.formats.identify); a score CSV's metadata is
    checked with it."""
    found = identify(path) if path.stat().st_size else None
    if found is not None and found.format is SCORES_CSV:
        from ..zeroshot.score_writer import check_scores  # zeroshot imports torch: only when needed

        check_scores(path)
    return found


def find(paths: list[str | Path], exclude: Path | None = None) -> Found:
    found = Found()
    files: list[Path] = []
    named: set[Path] = set()  # files given by name: one that is no stitchkit file is an error
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder; check the path")
        if p.is_file():
            named.add(p)
        if p.is_dir():
            for root, dirs, names in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                                 and (exclude is None or Path(root, d).resolve() != exclude.resolve()))
                files += [Path(root, n) for n in sorted(names) if not n.startswith(".")]
        else:
            files.append(p)

    for f in files:
        if f.suffix.lower() in SKIP_SUFFIXES and f not in named:
            continue
        try:
            kind = _identify(f)
        except UsageError as exc:  # a newer format version, a score CSV's metadata that does not fit
            if f in named:
                raise
            found.skipped.append(str(exc))
            continue
        where = DRAWN.get(kind.format) if kind is not None else None
        if where is None:
            if f in named:
                what = f"a {kind.format.name}, which the report does not draw" if kind else "not a stitchkit file"
                raise UsageError(f"{f}: {what}: give stores, maps, heads, sweep tables, score files or results "
                                 "(`--json` output, records, benchmark.json)")
            if kind is None:
                found.skipped.append(f"{f}: not a stitchkit file")
            continue
        if kind.format in JSON_KINDS:
            getattr(found, where).append((f, json.loads(f.read_text(encoding="utf-8"))))
        else:
            getattr(found, where).append(f)
    return found


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in r) + " |" for r in rows)]


# -- maps ---------------------------------------------------------------------------------------

def _map_label(h: dict[str, Any], path: Path) -> str:
    """A map as figures name it: source → target, method, anchors fitted on; then its file."""
    a = h.get("anchors") or {}
    source, target = h["source"].get("model_spec"), h["target"].get("model_spec")
    kind = str(h.get("method"))
    if a.get("tokens"):
        kind += " on patch tokens"
    if a.get("adaptation"):
        kind = f"label-free adaptation ({kind})"
    fitted = a.get("n_fit", h.get("n_anchors"))
    return (f"{figures.short_name(source, 48)} → {figures.short_name(target, 48)}, {kind}"
            + (f", {fitted} anchors" if fitted is not None else "") + f"\n{path.name}")


def _distinct(labels: list[str], paths: list[Path]) -> list[str]:
    """``labels`` made distinct: the file's folder added where two coincide, then a number."""
    out = list(labels)
    for widen in (lambda i: f"{out[i]} ({paths[i].parent.name})", lambda i: f"{out[i]} #{i + 1}"):
        seen: dict[str, list[int]] = defaultdict(list)
        for i, label in enumerate(out):
            seen[label].append(i)
        for same in seen.values():
            if len(same) > 1:
                for i in same:
                    out[i] = widen(i)
    return out


def _map_sections(maps: list[Path], out: Path) -> list[Section]:
    from ..artifacts import read_header

    if not maps:
        return []
    headers = [read_header(p) for p in maps]
    labels = _distinct([_map_label(h, p) for h, p in zip(headers, maps, strict=True)], maps)
    metrics, plans, rows, specs = {}, {}, [], []
    for p, h, label in zip(maps, headers, labels, strict=True):
        source, target = h["source"].get("model_spec"), h["target"].get("model_spec")
        m, a = h.get("metrics") or {}, h.get("anchors") or {}
        metrics[label], plans[label] = m, a
        specs.append([p.name, source, target])
        rows.append([p.name, h.get("method"), label.split("\n")[0], a.get("n_fit"), a.get("n_heldout"), a.get("n_pool"),
                     a.get("strategy"), a.get("from"), m.get("cosine_mean"), m.get("relative_mse"), m.get("top1"),
                     m.get("mrr"), m.get("cka_mapped_target"), m.get("probe_auc_ratio")])
    image = figures.map_quality(metrics, plans, out / "maps.png")
    numbers = _md_table(["map", "method", "source → target, method, anchors", "fit", "held out", "pool", "strategy",
                         "anchors from", "cosine", "relative MSE", "top-1", "MRR", "CKA mapped/target",
                         "probe AUC ratio"], rows)
    numbers += ["", *_md_table(["map", "source model", "target model"], specs)]
    return [Section("Maps: held-out quality and anchor plan", image,
                    "Metrics on the held-out anchors (never used to fit); relative MSE is the median row's "
                    "squared error over its squared distance to their mean: 0 is perfect, 1 no better than "
                    "predicting the mean. The anchor plan is what "
                    "the map file records: anchors fitted on, held out, and the pool they came from.", numbers)]


# -- sweeps -------------------------------------------------------------------------------------

def _read_sweep_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for r in rows:
        e: dict[str, Any] = {"method": r["method"], "n_anchors": int(r["n_anchors"])}
        for k, v in r.items():
            if k.endswith(("_mean", "_std")) and v not in ("", None):
                e[k] = float(v)
        if r.get("error"):
            e["error"] = r["error"]
        out.append(e)
    return out


def _sweep_sections(sweeps: list[tuple[str, list[dict[str, Any]]]], out: Path) -> list[Section]:
    from .sweep_plot import plot_sweep

    sections = []
    for n, (name, summary) in enumerate(sweeps):
        ok = [e for e in summary if "cosine_mean_mean" in e]
        if not ok:
            continue
        image = plot_sweep(ok, out / f"sweep-{n}.png", title=f"{name}: held-out anchors, mean ± std over seeds")
        metrics = [m for m in ("cosine_mean", "top1", "probe_auc_ratio") if any(f"{m}_mean" in e for e in ok)]
        header = ["method", "anchors", *(f"{m} (mean ± std)" for m in metrics)]
        rows = [[e["method"], e["n_anchors"],
                 *(f"{e[f'{m}_mean']:.3f} ± {e.get(f'{m}_std', 0.0):.3f}" if f"{m}_mean" in e else "" for m in metrics)]
                for e in sorted(ok, key=lambda e: (e["method"], e["n_anchors"]))]
        failed = sorted({f"{e['method']}: {e['error']}" for e in summary if e.get("error")})
        numbers = _md_table(header, rows) + ([""] + [f"- refused: {f}" for f in failed] if failed else [])
        sections.append(Section(f"Anchor sweep: {name}", image,
                                "Each point: maps fitted on that many anchors, measured on held-out anchors; "
                                "bars are one standard deviation over seeds.", numbers))
    return sections


# -- heads --------------------------------------------------------------------------------------

def _head_sections(heads: list[Path], out: Path) -> list[Section]:
    from ..artifacts import read_header
    from .loss_plot import plot_loss

    sections = []
    for p in heads:
        h = read_header(p)
        training = h.get("training") or {}
        history = training.get("history") or []
        image = plot_loss(history, out / f"loss-{p.stem}.png", title=f"head training: {p.name}")
        if image is None:
            continue
        val = training.get("val") or {}
        inputs = h.get("inputs") or {}
        numbers = _md_table(
            ["pairs", "train", "validation", "epochs run", "best epoch", "final train loss", "best val loss",
             "val i2t top-1", "val t2i top-1", "chance top-1"],
            [[training.get("n_pairs"), training.get("n_train"), training.get("n_val"), training.get("epochs_run"),
              training.get("best_epoch"), history[-1].get("train_loss"), val.get("val_loss"), val.get("i2t_top1"),
              val.get("t2i_top1"), val.get("chance_top1")]])
        if inputs.get("text_origin"):
            numbers += ["", f"Texts: {inputs['text_origin']}."]
        sections.append(Section(f"Head training: {p.name}", image,
                                "Loss per epoch from the training history stored in the head file's metadata.",
                                numbers))
    return sections


# -- classification -----------------------------------------------------------------------------

def _matcher(classes: list[str], result: dict[str, Any] | None):  # noqa: ANN202 - a predicate
    """label, class -> bool: the prompt set's label lists when known, else the class name."""
    from ..zeroshot.prompts import load_prompts

    candidates = []
    params = ((result or {}).get("provenance") or {}).get("params") or {}
    if params.get("prompt_file"):
        candidates.append(params["prompt_file"])
    candidates += ["pneumonia", "cxr14", "pneumonia-subtypes"]  # the curated sets, by class names
    for spec in candidates:
        try:
            prompts = load_prompts(spec)
        except (UsageError, OSError):
            continue
        by_name = {c.name: c for c in prompts.classes}
        if set(classes) <= set(by_name):
            return (lambda label, c, known=by_name: known[c].matches(label)), f"labels of prompt set {Path(prompts.source).stem}"

    def plain(label: str, c: str) -> bool:
        return c.lower() in {x.strip().lower() for x in label.replace(",", "|").split("|")}

    return plain, "label equals the class name"


@dataclass
class Route:
    """What the run's results say of one score file: the name the page gives it, the panel of
    its data set's ROC figure it is drawn in, and the data set it was measured on."""

    label: str
    group: str
    dataset: str | None
    strength: int  # trust in the data set's name: 3 a route of the run's table, 2 a record, 1 raw output or the store
    order: float  # where it comes on the page: the run's table's order first
    result: dict[str, Any] | None = None  # the classify result (record or raw --json), when given
    control_of: str | None = None  # the route (label) this one is the control of
    query: str | None = None  # the model of the query store (a group too big for one panel splits by it)


#: How `stitch demo` names its routes: "(a) ..." to "(e) ..." (cli/demo.py, plan()).
DEMO_GROUPS = {"a": "native", "b": "stitched", "c": "native", "d": "stitched", "e": "zero-shot"}


def route_group(route: str) -> str:
    """The ROC panel a named route goes to: the demo's letters by what they are (native,
    stitched, zero-shot), with the part before ":" where the route has one (``(e) covid notes:
    token head`` → ``zero-shot: covid notes``, ``NIH external: ...`` → ``NIH external``)."""
    import re

    m = re.match(r"\((\w)\)\s*(.*)", route)
    body = m[2] if m else route
    head, sep, _ = body.partition(": ")
    if m:
        group = DEMO_GROUPS.get(m[1].lower(), f"({m[1]})")
        return f"{group}: {head}" if sep else group
    return head if sep else "routes"


def _panel_label(label: str, group: str) -> str:
    """A route's name in its panel: without what the panel's title already says."""
    import re

    body = re.sub(r"^\(\w\)\s*", "", label)
    head, sep, rest = body.partition(": ")
    return rest if sep and group.endswith(head) else label


def _record(result: dict[str, Any]) -> dict[str, Any]:
    """A classify result as a record; raw `--json` output keeps its id file (a subset of a data
    set is a data set of its own)."""
    from ..results import is_record, to_record

    if is_record(result):
        return result
    params = ((result.get("provenance") or {}).get("params") or {})
    return to_record("classify", result, command={"params": {"ids_file": params["ids_file"]}}
                     if params.get("ids_file") else None)


def _query(record: dict[str, Any] | None) -> str | None:
    """The model that embedded the queries: a store written by `stitch apply` names the model
    of the store it mapped (``source_model_spec``)."""
    from ..results import model_label, store_attr

    record = record or {}
    query = (record.get("composition") or {}).get("query") or {}
    spec = store_attr(query.get("path"), "source_model_spec") or record.get("model_spec") or query.get("model_spec")
    return model_label(spec) if spec else None


def _query_group(record: dict[str, Any]) -> str:
    query = _query(record)
    return f"{query} queries" if query else "routes"


def _routes(found: Found) -> dict[str, Route]:
    """Score file (resolved path) → its route, from every result that names it as its output:
    a table's routes (`stitch demo`'s demo-results.json) with their controls, records, raw
    `--json` output, a benchmark's records."""
    import shlex

    routes: dict[str, Route] = {}

    def put(output: Any, route: Route) -> None:
        if not output:
            return
        key = str(Path(output).resolve())
        if key not in routes or routes[key].strength < route.strength:
            routes[key] = route

    order = 0
    for _, records in found.tables:
        for r in records:
            if "classes" not in r:
                continue
            rec = _record(r)
            order += 1
            if r.get("route"):
                route = str(r["route"])
                put(rec.get("output"), Route(route, route_group(route), rec.get("dataset"), 3, order, rec,
                                             query=_query(rec)))
                if r.get("control_command"):  # the reference through the same anchors (cli/demo.py)
                    argv = shlex.split(str(r["control_command"]))
                    if "-o" in argv[:-1]:
                        put(argv[argv.index("-o") + 1], Route(f"control of {route}", route_group(route),
                                                              rec.get("dataset"), 3, order + 0.5, None, route))
            elif rec.get("suite"):  # a benchmark's record
                put(rec.get("output"), Route(f"{rec.get('model')} (benchmark {rec['suite']}, {rec.get('dataset')})",
                                             f"benchmark {rec['suite']}", rec.get("dataset"), 2, 10_000 + order, rec,
                                             query=_query(rec)))
            else:
                put(rec.get("output"), Route(str(rec.get("model")), _query_group(rec), rec.get("dataset"), 2,
                                             10_000 + order, rec, query=_query(rec)))
    for _, data in found.results:
        if not (data.get("output") and "classes" in data):
            continue
        order += 1
        rec = _record(data)
        key = str(Path(data["output"]).resolve())
        if key in routes and routes[key].result is None:  # a control: its own result gives the metrics
            routes[key].result = data
        label = str(rec.get("route") or rec.get("model"))
        group = route_group(label) if rec.get("route") else _query_group(rec)
        put(data["output"], Route(label, group, rec.get("dataset"), 2 if data is rec else 1, 10_000 + order, data,
                                  query=_query(rec)))
    return routes


def _unnamed_route(path: Path, meta: dict[str, Any], n: int) -> Route:
    """A score file no result names: its own name; the data set of the store it scored."""
    from ..results import dataset_of

    query = ((meta.get("composition") or {}).get("query") or {})
    dataset = dataset_of(query.get("path")) if query.get("path") else None
    group = _query_group({"model_spec": query.get("model_spec")})
    return Route(path.stem, group, dataset or path.stem, 1 if dataset else 0, 20_000 + n,
                 query=_query({"model_spec": query.get("model_spec")}))


@dataclass(eq=False)
class Curve:
    """One route's scores for one class on one data set, for the data set's ROC figure."""

    route: Route
    cls: str
    ids: str  # the samples (a digest of the sorted ids): one ROC figure per set of samples
    truth: str  # the true labels on them (a digest): curves of one panel share them
    y: np.ndarray
    score: np.ndarray


def _digest(*parts: Any) -> str:
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        h.update(part.tobytes() if isinstance(part, np.ndarray) else str(part).encode())
    return h.hexdigest()[:16]


def _classify_sections(found: Found, out: Path) -> tuple[list[Section], list[Section], list[dict[str, Any]]]:
    """Per score file: its ROC, confusion matrix and calibration, its score histograms; and one
    ROC figure per data set with every route on it. Returns (ROC figures, per-route sections,
    the ROC figures' panels)."""
    from sklearn.metrics import roc_auc_score

    from ..zeroshot.metrics import composition_rule
    from ..zeroshot.score_writer import read_scores

    routes = _routes(found)
    drawn: list[tuple[float, list[Section]]] = []
    curves: list[Curve] = []
    labels_seen: dict[str, int] = defaultdict(int)
    for n, path in enumerate(found.scores):
        sf = read_scores(path)
        ids, labels, scores, ranking, predicted, meta = (sf.ids, sf.labels, sf.probabilities, sf.ranking,
                                                         sf.predicted, sf.meta)
        if labels is None:
            continue  # unlabelled samples: nothing to measure against
        classes = list(sf.classes)
        info = routes.get(str(path.resolve())) or _unnamed_route(path, meta, n)
        result = info.result
        metrics = (result or {}).get("metrics") or {}
        mode = metrics.get("mode") or meta.get("mode") or ("multiclass" if predicted else "multilabel")
        match, how = _matcher(classes, result)
        y = np.array([[match(lab, c) for c in classes] for lab in labels], dtype=bool).reshape(len(labels), len(classes))
        if not y.any():
            continue  # no sample carries a label any class matches: nothing to measure against
        labels_seen[info.label] += 1
        if labels_seen[info.label] > 1:  # two files of one name (a re-run, another folder): tell them apart
            info = replace(info, label=f"{info.label} [{path.name}]")
        route = info.label
        # two exclusive classes give mirrored ROCs: one (the last class) says it all
        shown = classes[-1:] if len(classes) == 2 and mode == "multiclass" else classes
        by_id = np.argsort(np.asarray(ids, dtype=object).astype(str))
        samples = _digest(np.asarray(ids, dtype=object)[by_id].astype(str).tolist())
        for c, name in enumerate(classes):
            if name in shown and y[:, c].any() and not y[:, c].all():
                curves.append(Curve(info, name, samples, _digest(name, y[by_id, c]), y[:, c], ranking[:, c]))
        if mode == "multiclass":
            rule = str(metrics.get("threshold") or composition_rule(mode, meta.get("composition")))
            pred = np.array([classes.index(p) if p in classes else -1 for p in predicted]) if predicted \
                else scores.argmax(1)
            single = y.sum(1) == 1  # samples whose label names exactly one class
            true = y.argmax(1)
            cm = np.zeros((len(classes), len(classes)), dtype=int)
            for t, p in zip(true[single], pred[single], strict=True):
                if p >= 0:
                    cm[t, p] += 1
            confusion = figures.Confusion(cm, classes, classes, rule)
        else:
            threshold = float(metrics.get("threshold", 0.5)) if isinstance(metrics.get("threshold"), int | float) else 0.5
            rule = f"score ≥ {threshold:g} per class"
            hit = scores >= threshold
            cm = np.array([[int((hit[:, c] & y[:, c]).sum()), int((hit[:, c] & ~y[:, c]).sum()),
                            int((~hit[:, c] & y[:, c]).sum()), int((~hit[:, c] & ~y[:, c]).sum())]
                           for c in range(len(classes))])
            confusion = figures.Confusion(cm, classes, ["TP", "FP", "FN", "TN"], rule)
        title = f"{route} — {path.name} (n={len(ids)}; true labels: {how})"
        image = figures.classification_panels(y, ranking, scores, classes, confusion,
                                              out / f"classify-{_slug(path, n)}.png", title=title)
        rows = []
        for c, name in enumerate(classes):
            yc = y[:, c]
            auc = roc_auc_score(yc, ranking[:, c]) if yc.any() and not yc.all() else None
            rows.append([name, int(yc.sum()), auc, float(scores[yc, c].mean()) if yc.any() else None,
                         float(scores[~yc, c].mean()) if (~yc).any() else None])
        numbers = _md_table(["class", "positives", "AUC", "mean score, positives", "mean score, others"], rows)
        numbers += ["", f"Confusion matrix ({rule}; rows true, columns {'predicted' if mode == 'multiclass' else 'outcome'}):", ""]
        numbers += _md_table(["true \\ " + ("predicted" if mode == "multiclass" else "outcome"), *confusion.columns],
                             [[r, *cm[i].tolist()] for i, r in enumerate(confusion.rows)])
        if mode == "multiclass":
            numbers += ["", f"Accuracy at {rule} over the {int(cm.sum())} samples with one class label: "
                            f"{_fmt(np.trace(cm) / cm.sum() if cm.sum() else None)}."]
        hist = figures.score_histograms(y, scores, classes, out / f"scores-{_slug(path, n)}.png", title=f"{route}: scores by true label")
        drawn.append((info.order, [
            Section(f"Classification: {route}", image,
                    "ROC per class (AUC in the legend), the confusion matrix at the stated decision "
                    "rule, and the calibration curve (fraction positive per bin of predicted "
                    "probability).", numbers),
            Section(f"Score histograms: {route}", hist,
                    "Each class's score on samples with that label (red) and without it (blue).",
                    [f"Means as in the table of \"Classification: {route}\" above."])]))
    combined, panels = _roc_sections(curves, out)
    return combined, [s for _, pair in sorted(drawn, key=lambda d: d[0]) for s in pair], panels


def plan_panels(curves: list[Curve], most: int = figures.ROC_PANEL_MOST) -> list[tuple[str, list[Curve]]]:
    """The panels of one ROC figure: a panel per group of routes (in the run's order), each
    route followed by its control. A group of more than ``most`` curves is split by the model
    of its queries where they differ, then into as few panels of about equal size as hold it;
    a route and its control are never apart."""
    groups: dict[str, list[Curve]] = {}
    for c in sorted(curves, key=lambda c: c.route.order):
        groups.setdefault(c.route.group, []).append(c)
    split: dict[str, list[Curve]] = {}
    for group, members in groups.items():
        heads = [c for c in members if not (c.route.control_of and any(m.route.label == c.route.control_of
                                                                         for m in members))]
        queries = list(dict.fromkeys(c.route.query for c in heads))
        if len(members) <= most or len(queries) < 2 or None in queries:
            split[group] = members
            continue
        for q in queries:  # a control goes with its route
            routes = {c.route.label for c in heads if c.route.query == q}
            split[f"{group} · {q} queries"] = [c for c in members if c.route.label in routes
                                               or c.route.control_of in routes and c not in heads]
    panels = []
    for group, members in split.items():
        units: list[list[Curve]] = []
        placed: set[int] = set()
        for c in members:
            if id(c) in placed or (c.route.control_of and any(m.route.label == c.route.control_of for m in members)):
                continue
            unit = [c] + [m for m in members if m.route.control_of == c.route.label]
            placed.update(map(id, unit))
            units += [unit[i:i + most] for i in range(0, len(unit), most)]
        units += [[c] for c in members if id(c) not in placed and not any(c in u for u in units)]
        total = sum(map(len, units))
        target = -(-total // -(-total // most))  # as even as the count of panels allows
        chunks: list[list[Curve]] = [[]]
        for unit in units:
            if chunks[-1] and len(chunks[-1]) + len(unit) > most:
                chunks.append([])
            chunks[-1] += unit
            if len(chunks[-1]) >= target:
                chunks.append([])
        chunks = [ch for ch in chunks if ch]
        panels += [(group if len(chunks) == 1 else f"{group} ({i}/{len(chunks)})", ch) for i, ch in enumerate(chunks, 1)]
    return panels


def _roc_sections(curves: list[Curve], out: Path) -> tuple[list[Section], list[dict[str, Any]]]:
    """One ROC figure per data set (the same samples), named after it: small panels of at
    most figures.ROC_PANEL_MOST routes, grouped as the run groups its routes; the table beside
    lists every route."""
    from collections import Counter

    from sklearn.metrics import roc_auc_score

    by_samples: dict[str, list[Curve]] = defaultdict(list)
    for c in curves:
        by_samples[c.ids].append(c)
    sections, meta = [], []
    for members in sorted(by_samples.values(), key=lambda m: min(c.route.order for c in m)):
        if len({c.route.label for c in members}) < 2:
            continue  # one route: its own section shows it
        # the data set's name: the strongest source's (a route of the run's table, then a record)
        names = Counter((c.route.strength, c.route.dataset) for c in members if c.route.dataset)
        ranked = sorted(names, key=lambda k: (-k[0], -names[k], str(k[1])))
        name = str(ranked[0][1]) if ranked else "unnamed data set"
        aliases = sorted({str(n) for _, n in ranked} - {name})
        truths: dict[tuple[str, str], list[Curve]] = defaultdict(list)
        for c in members:
            truths[(c.cls, c.truth)].append(c)
        # a class only one route scored compares nothing: its route's own section shows it
        truths = {k: v for k, v in truths.items() if len({c.route.label for c in v}) > 1}
        if not truths:
            continue
        classes = {cls for cls, _ in truths}
        panels, rows, counts = [], [], []
        for (cls, _), group in sorted(truths.items(), key=lambda t: (t[0][0], -len(t[1]))):
            several = sum(1 for k in truths if k[0] == cls) > 1  # one class, two sets of labels
            sets = sorted({str(c.route.dataset) for c in group})
            for title, chunk in plan_panels(group):
                full = (title + (f" · {cls}" if len(classes) > 1 else "")
                        + (f" (labels of {', '.join(sets)})" if several else ""))
                panels.append(figures.RocPanel(full, [figures.RocCurve(
                    "control" if c.route.control_of and any(m.route.label == c.route.control_of for m in chunk)
                    else _panel_label(c.route.label, c.route.group), c.y, c.score,
                    control=bool(c.route.control_of) and any(m.route.label == c.route.control_of for m in chunk))
                    for c in chunk]))
                for c in chunk:
                    rows.append([c.route.label, roc_auc_score(c.y, c.score), full])
            counts.append((cls, len(group[0].y), int(group[0].y.sum())))
        n = len(members[0].y)
        what = "; ".join(f"{cls} against the rest, {pos} of {n} positive" for cls, n, pos in counts)
        image, drawn = figures.roc_panels(panels, out / f"roc-{len(sections):02d}-{_safe(name)}.png",
                                          title=f"{name}: ROC of every route ({what})")
        meta.append({"dataset": name, "image": str(image),
                     "panels": [{"title": p.title, "curves": k} for p, k in zip(panels, drawn, strict=True)]})
        caption = (f"Every route scored on the same {n} samples of {name}"
                   + (f" (also named {', '.join(aliases)} by some results)" if aliases else "")
                   + ": a panel per group of routes, AUC first in each legend; a dashed line is the "
                     "control of the route drawn above it in the same colour.")
        sections.append(Section(f"ROC of every route: {name}", image, caption,
                                [f"{n} samples; " + "; ".join(f"{pos} with {cls}" for cls, _, pos in counts) + ".", "",
                                 *_md_table(["route", "AUC", "panel"], rows)], beside=True))
    return sections, meta


def _safe(text: str) -> str:
    """A data set's name as part of a file name: ``nih [test-ids]`` → ``nih-test-ids``."""
    import re

    return re.sub(r"\W+", "-", text).strip("-")[:60] or "data"


def _slug(path: Path, n: int) -> str:
    """A figure name from the input file's name, numbered so two folders' files never clash."""
    return f"{n:02d}-{''.join(ch if ch.isalnum() or ch in '-_' else '-' for ch in path.stem)}"


# -- benchmarks ---------------------------------------------------------------------------------

def _benchmark_sections(found: Found, out: Path) -> list[Section]:
    """Per benchmark.json: macro AUC per data set with its interval, each finding a dot, and the
    benchmark's own table (what `stitch benchmark` wrote to table.md)."""
    sections = []
    for n, (_, data) in enumerate(found.benchmarks):
        rows = [{"name": d["name"], "auc_macro": d["metrics"].get("auc_macro"),
                 "ci": (d["metrics"].get("ci") or {}).get("auc_macro"), "aucs": d["metrics"].get("auc") or {}}
                for d in data.get("datasets") or []]
        if not rows:
            continue
        suite = (data.get("suite") or {}).get("name", "suite")
        image = figures.benchmark_aucs(rows, out / f"benchmark-{n:02d}.png",
                                       title=f"{suite}: {data.get('model') or ''}, macro AUC per data set "
                                             "(95 % interval) and each finding's AUC")
        numbers = [line for line in str(data.get("markdown") or "").splitlines() if not line.startswith("# ")]
        sections.append(Section(f"Zero-shot benchmark: {suite}", image,
                                "Each line is a data set: the diamond its macro AUC over findings with the "
                                "bootstrap interval, the dots its findings' AUCs; the dotted line is chance.",
                                numbers))
    return sections


def _curve_sections(found: Found, out: Path) -> list[Section]:
    """Per learning-curve.json (examples/learning-curve): AUC against training pairs per route."""
    sections = []
    for n, (_, data) in enumerate(found.curves):
        routes = data.get("routes") or []
        image = figures.learning_curve(data.get("curve") or [], routes, out / f"learning-curve-{n:02d}.png",
                                       title=f"Learning curve: {data.get('metric', 'AUC')}")
        rows = [[c["n"], *(f"{c[r]['auc_mean']:.3f} ± {c[r]['auc_std']:.3f}" if r in c else "-" for r in routes)]
                for c in data.get("curve") or []]
        sections.append(Section("Learning curve", image, "Mean AUC over seeds against the number of training "
                                "pairs; the band is one standard deviation.", _md_table(["pairs", *routes], rows)))
    return sections


def _explain_sections(found: Found, out: Path, most: int = 12) -> list[Section]:
    """Per `stitch explain` folder (its explain.json): the first ``most`` images, each with one
    heatmap per class over the patch grid, as explain drew them."""
    sections = []
    for n, (path, data) in enumerate(found.explains):
        kind, grid = data.get("kind") or "heatmap", "×".join(map(str, data.get("grid") or [])) or "patch"
        for k, image in enumerate((data.get("images") or [])[:most]):
            png = Path(image["png"])
            png = png if png.exists() else path.parent / png.name  # the folder was moved
            if not png.exists():
                found.skipped.append(f"{png}: the image of {path} is gone")
                continue
            copy = out / f"explain-{n:02d}-{k:03d}.png"
            copy.write_bytes(png.read_bytes())
            label = f" ({image['label']})" if image.get("label") else ""
            sections.append(Section(f"Where it looks: {image['id']}{label}", copy,
                                    f"{kind} over the {grid} grid, one panel per class "
                                    f"({', '.join(data.get('classes') or [])}); `stitch explain` wrote "
                                    f"{path.parent}.", []))
    return sections


# -- stores -------------------------------------------------------------------------------------

def _store_sections(found: Found, out: Path, max_points: int = 2000) -> list[Section]:
    """For each pair of stores in a map's source and target spaces over shared ids: map output vs native."""
    if not found.maps or len(found.stores) < 2:
        return []
    from ..artifacts import read_header
    from ..maps import load_map
    from ..store import EmbeddingStore

    info = {}
    for s in found.stores:
        with EmbeddingStore(s, allow_incomplete=True) as st:
            info[s] = (st.model_spec, st.dim, len(st))
    groups: dict[tuple[Path, Path], list[Path]] = defaultdict(list)
    for m in found.maps:
        h = read_header(m)
        src_spec, tgt_spec = h["source"].get("model_spec"), h["target"].get("model_spec")
        fit_paths = {str(Path(h["source"].get("path", "")).resolve()), str(Path(h["target"].get("path", "")).resolve())}
        pairs = [(a, b) for a in found.stores for b in found.stores
                 if a != b and info[a][0] == src_spec and info[b][0] == tgt_spec
                 and info[a][1] == h.get("n_features_in") and info[b][1] == h.get("n_features_out")
                 and _same_samples(a, b)]
        # prefer stores the map was not fitted on (its anchors would flatter it)
        fresh = [p for p in pairs if str(p[0].resolve()) not in fit_paths]
        for pair in (fresh or pairs)[:4]:
            groups[pair].append(m)
    sections = []
    for n, ((src, tgt), maps) in enumerate(sorted(groups.items())):
        with EmbeddingStore(src) as s, EmbeddingStore(tgt) as t:
            shared = set(s.ids)
            ids = [i for i in t.ids if i in shared]
            if len(ids) < 3:
                continue
            if len(ids) > max_points:  # PCA and histograms of a fixed random subset
                rng = np.random.default_rng(0)
                ids = [ids[i] for i in sorted(rng.choice(len(ids), max_points, replace=False))]
            X, Y = s.read(s.index_of(ids)), t.read(t.index_of(ids))
            labels = t.labels[t.index_of(ids)] if t.labels is not None else np.array(["(no label)"] * len(ids))
        mapped, cosines, rows = {}, {}, []
        for m in maps:
            Z = np.asarray(load_map(m).transform(X), dtype=np.float64)
            cos = np.sum(Z * Y, 1) / (np.linalg.norm(Z, axis=1) * np.linalg.norm(Y, axis=1) + 1e-12)
            h = read_header(m)
            fitted_here = str(src.resolve()) == str(Path(h["source"].get("path", "")).resolve())
            name = m.name + (" (fitted on these stores)" if fitted_here else "")
            mapped[name], cosines[name] = Z, cos
            rows.append([name, len(ids), float(np.median(cos)), float(cos.mean()), float(np.percentile(cos, 5))])
        what = f"{src.name} mapped into the space of {tgt.name} ({len(ids)} shared ids)"
        hist = figures.cosine_histograms(cosines, out / f"cosine-{n}.png", title=what)
        sections.append(Section(f"Cosine of mapped to native: {src.name} → {tgt.name}", hist,
                                "How close each mapped sample lands to its own native target embedding.",
                                _md_table(["map", "samples", "median cosine", "mean cosine", "5th percentile"], rows)))
        pca, ratio = figures.pca_panels(Y, mapped, [str(v) for v in labels], out / f"pca-{n}.png",
                                        title=f"{tgt.name}: native (o) and mapped {src.name} (x)")
        sections.append(Section(f"PCA of native and mapped: {src.name} → {tgt.name}", pca,
                                "Axes are the top two principal components of the native target embeddings.",
                                [f"PC1 and PC2 hold {100 * ratio[0]:.1f} % and {100 * ratio[1]:.1f} % of the native "
                                 f"variance; {len(ids)} samples, labels {', '.join(sorted(set(map(str, labels))))}."]))
    return sections


def _same_samples(a: Path, b: Path) -> bool:
    """Whether two stores hold the same samples: same ids, checked on the first few."""
    from ..store import EmbeddingStore

    with EmbeddingStore(a, allow_incomplete=True) as s, EmbeddingStore(b, allow_incomplete=True) as t:
        if len(s) == 0 or len(t) == 0:
            return False
        sample = set(list(s.ids[: min(50, len(s))]))
        return len(sample & set(t.ids)) >= max(1, len(sample) // 2)


# -- the page -----------------------------------------------------------------------------------

def _headline(record: dict[str, Any]) -> str | None:
    """A classification's headline metric: the AUC of the positive class of two exclusive
    classes (the last, as `stitch demo` and the curated prompt sets order them), else the macro
    AUC over classes."""
    m, classes = record.get("metrics") or {}, record.get("classes") or []
    mode = record.get("mode") or m.get("mode")
    if len(classes) == 2 and mode != "multilabel" and f"auc_{classes[-1]}" in m:
        return f"auc_{classes[-1]}"
    return "auc_macro" if "auc_macro" in m else None


def _with_ci(m: dict[str, Any], key: str, sign: bool = False) -> str:
    v, lo, hi = m.get(key), m.get(f"{key}_ci_low"), m.get(f"{key}_ci_high")
    if not isinstance(v, int | float):
        return ""
    f = "{:+.3f}" if sign else "{:.3f}"
    return f.format(v) + (f" [{f.format(lo)}, {f.format(hi)}]" if isinstance(lo, int | float) and isinstance(hi, int | float) else "")


def _classify_table(records: list[dict[str, Any]], lead: str) -> list[str]:
    """Markdown table of classify records: each with its headline AUC and 95 % interval, the
    macro AUC, accuracy, and the paired difference from its control where it has one."""
    heads = [_headline(r) for r in records]
    one = len({h for h in heads if h}) <= 1
    name = next((h for h in heads if h), "auc_macro")
    header = [lead, "dataset", "n"] + ([] if one else ["headline"]) + [f"{name if one else 'headline AUC'} [95% CI]",
                                                                        "auc_macro", "accuracy"]
    rows = []
    for r, h in zip(records, heads, strict=True):
        m = r.get("metrics") or {}
        positive = h[len("auc_"):] if h else ""
        rows.append([r.get("route") or r.get("model"), r.get("dataset"), m.get("n", r.get("n")),
                     *([] if one else [h or ""]), _with_ci(m, h) if h else "", m.get("auc_macro"), m.get("accuracy"),
                     m.get(f"control_auc_{positive}"), _with_ci(m, f"delta_auc_{positive}", sign=True),
                     m.get(f"delta_auc_{positive}_p")])
    extra = [(f"control {name}" if one else "control AUC"), "Δ AUC vs control [95% CI]", "p (DeLong)"]
    keep = [i for i in range(len(extra)) if any(row[len(header) + i] not in (None, "") for row in rows)]
    header += [extra[i] for i in keep]
    rows = [row[:len(header) - len(keep)] + [row[len(header) - len(keep) + i] for i in keep] for row in rows]
    p_col = header.index("p (DeLong)") if "p (DeLong)" in header else None
    if p_col is not None:  # p-values keep their leading digits: 0.000 says less than 3e-05
        rows = [[*row[:p_col], f"{row[p_col]:.2g}" if isinstance(row[p_col], float) else row[p_col], *row[p_col + 1:]]
                for row in rows]
    return _md_table(header, rows)


def _results_tables(found: Found) -> list[str]:
    """The run's results at the top of the page: its own table of routes (`stitch demo`'s
    results/demo-results.json) when given, else its classify results; then other tables of
    records (a benchmark's records.json)."""
    tables = []
    for path, records in found.tables:
        recs = [_record(r) if "classes" in r else r for r in records]
        recs = [{**r, "route": raw.get("route", r.get("route"))} for r, raw in zip(recs, records, strict=True)
                if r.get("task") == "zeroshot_classification"]
        if recs:
            tables.append((path.name, recs, all(r.get("route") for r in recs)))
    main = [t for t in tables if t[2]]
    lines: list[str] = []
    if main:
        for name, recs, _ in main:
            lines += [f"## Results: {name}", "", "Every route of the run, in its order; the headline metric is "
                      "the positive class's AUC (the macro AUC over classes where there is no single positive "
                      "class) with its bootstrap 95 % interval.", "", *_classify_table(recs, "route"), ""]
    else:
        recs = sorted((_record(d) for _, d in found.results if "classes" in d and "metrics" in d),
                      key=lambda r: (str(r.get("dataset")), str(r.get("route") or r.get("model"))))
        if recs:
            lines += [f"## Results: {len(recs)} classifications", "", "Each classify result given, by data set; the "
                      "headline metric is the positive class's AUC (the macro AUC over classes where there is no "
                      "single positive class) with its bootstrap 95 % interval.", "",
                      *_classify_table(recs, "route"), ""]
    for name, recs, routed in tables:
        if not routed:
            lines += [f"## Results: {name}", "", *_classify_table(recs, "model"), ""]
    return lines


def build_report(paths: list[str | Path], out: str | Path, *, title: str = "stitchkit report") -> dict[str, Any]:
    """Draw every figure the given files support; write ``out``/index.html and report.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found = find(list(paths), exclude=out)
    sweeps: list[tuple[str, list[dict[str, Any]]]] = [(p.name, _read_sweep_csv(p)) for p in found.sweeps]
    csv_paths = {str(p.resolve()) for p in found.sweeps}
    for p, data in found.results:  # sweep JSON whose table was not given
        if "summary" in data and str(Path(data.get("table") or "").resolve()) not in csv_paths:
            sweeps.append((p.name, data["summary"]))
    roc, per_route, roc_meta = _classify_sections(found, out)
    # What a reader asks first (how each route did) first; how each piece was made after it.
    sections = (roc + _benchmark_sections(found, out) + _map_sections(found.maps, out) + _sweep_sections(sweeps, out)
                + _head_sections(found.heads, out) + _curve_sections(found, out) + per_route
                + _explain_sections(found, out) + _store_sections(found, out))
    intro = _results_tables(found)
    if not sections and not intro:
        raise UsageError("nothing to draw: give maps, sweep CSVs, heads, stores, score files or `--json` "
                         "results (or a folder holding them)")
    summary = (f"From {len(found.stores)} stores, {len(found.maps)} maps, {len(found.heads)} heads, "
               f"{len(found.sweeps)} sweep tables, {len(found.scores)} score files, {len(found.benchmarks)} "
               f"benchmarks and {len(found.results) + len(found.tables)} result files.")
    md = [f"# {title}", "", summary, "", *intro]
    for s in sections:
        md += [f"## {s.title}", "", f"![{s.title}]({s.image.name})", "", s.caption, "", *s.numbers, ""]
    with atomic_output(out / "report.md") as tmp:
        tmp.write_text("\n".join(md), encoding="utf-8")
    with atomic_output(out / "index.html") as tmp:
        tmp.write_text(_html(title, [summary, "", *intro], sections), encoding="utf-8")
    return {"report": str(out / "index.html"), "markdown": str(out / "report.md"),
            "figures": [str(s.image) for s in sections], "roc": roc_meta, "skipped": found.skipped}


CSS = ("body{font-family:system-ui,sans-serif;font-size:15px;max-width:1360px;margin:1em auto;padding:0 16px;"
       "color:#222}h1{margin:0.3em 0}h2{margin:1.6em 0 0.3em;padding-top:0.4em;border-top:1px solid #ddd;"
       "font-size:1.25em}nav{columns:3;font-size:90%;margin:0.5em 0 1em}nav a{display:block}"
       ".tbl{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:0.5em 0}"
       "td,th{border:1px solid #ccc;padding:3px 7px;font-size:90%;vertical-align:top}th{background:#f2f2f2;"
       "text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}"
       ".fig{display:flex;flex-wrap:wrap;gap:12px 20px;align-items:flex-start}.fig img{max-width:100%;height:auto}"
       ".fig .numbers{flex:1 1 380px;min-width:0}.stack{display:block}p.cap{color:#444;margin:0.3em 0 0.6em}")


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row ("\\|" is a "|" inside a cell)."""
    import re

    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", inner)]


def _is_separator(cells: list[str]) -> bool:
    import re

    return bool(cells) and all(re.fullmatch(r":?-{3,}:?", c) for c in cells)


def _md_html(lines: list[str]) -> list[str]:
    """Markdown as report.md writes it (headings, images, tables, lists, paragraphs) as HTML:
    a table's first row is its header; its separator row is no row."""
    import re

    e = html.escape
    number = re.compile(r"[-+]?(\d[\d,]*\.?\d*(e[-+]?\d+)?|nan)( \[[-+]?[\d.]+, [-+]?[\d.]+\])?", re.I)
    parts: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *body = table
            cell = lambda c: f"<td class='n'>{e(c)}</td>" if number.fullmatch(c) else f"<td>{e(c)}</td>"  # noqa: E731
            parts.append("<div class='tbl'><table><thead><tr>" + "".join(f"<th>{e(c)}</th>" for c in head)
                         + "</tr></thead><tbody>" + "".join("<tr>" + "".join(map(cell, r)) + "</tr>" for r in body)
                         + "</tbody></table></div>")
            table.clear()

    for line in lines:
        if line.lstrip().startswith("|"):
            cells = _cells(line)
            if not _is_separator(cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("## "):
            parts.append(f"<h2>{e(line[3:])}</h2>")
        elif line.startswith("# "):
            parts.append(f"<h1>{e(line[2:])}</h1>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            parts.append(f"<img src='{e(src.rstrip(')'))}' alt='{e(alt)}'>")
        elif line.startswith("- "):
            parts.append(f"<p>• {e(line[2:])}</p>")
        elif line.strip():
            parts.append(f"<p>{e(line)}</p>")
    flush()
    return parts


def _html(title: str, intro: list[str], sections: list[Section]) -> str:
    """The page: the results tables, a list of contents, then each figure with its caption and
    the numbers it shows (beside it where the figure leaves room, else below)."""
    e = html.escape
    kinds: dict[str, list[int]] = {}
    for i, s in enumerate(sections):
        kinds.setdefault(s.title.split(":")[0] if not s.title.startswith("ROC") else s.title, []).append(i)
    nav = "".join(f"<a href='#s{idx[0]}'>{e(k)}{f' ({len(idx)})' if len(idx) > 1 else ''}</a>" for k, idx in kinds.items())
    parts = [f"<!doctype html><html lang='en'><meta charset='utf-8'><title>{e(title)}</title><style>{CSS}</style>",
             f"<h1>{e(title)}</h1>", *_md_html(intro)]
    if sections:
        parts.append(f"<h2>Contents</h2><nav>{nav}</nav>")
    for i, s in enumerate(sections):
        parts += [f"<section id='s{i}'><h2>{e(s.title)}</h2><p class='cap'>{e(s.caption)}</p>",
                  f"<div class='fig{'' if s.beside else ' stack'}'><img src='{e(s.image.name)}' alt='{e(s.title)}'>"
                  f"<div class='numbers'>", *_md_html(s.numbers), "</div></div></section>"]
    return "\n".join(parts) + "\n"
