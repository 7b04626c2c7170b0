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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..fileio import atomic_output
from ..formats import (
    BENCHMARK,
    COMMAND_OUTPUT,
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
    skipped: list[str] = field(default_factory=list)


@dataclass
class Section:
    title: str
    image: Path
    caption: str
    numbers: list[str]  # Markdown lines (usually a table) stating what the figure shows


#: What the report does with each kind of file (stitchkit.formats.identify); other kinds are not drawn.
DRAWN = {STORE: "stores", MAP: "maps", HEAD: "heads", SWEEP_TABLE: "sweeps", SCORES_H5: "scores",
         SCORES_CSV: "scores", RECORD: "results", COMMAND_OUTPUT: "results", RECORDS: "tables",
         BENCHMARK: "benchmarks", LEARNING_CURVE: "curves"}
JSON_KINDS = {RECORD, COMMAND_OUTPUT, RECORDS, BENCHMARK, LEARNING_CURVE}


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

def _map_sections(maps: list[Path], out: Path) -> list[Section]:
    from ..artifacts import read_header

    if not maps:
        return []
    metrics, plans, rows, specs = {}, {}, [], []
    for p in maps:
        h = read_header(p)
        source, target = h["source"].get("model_spec"), h["target"].get("model_spec")
        # Figures name models briefly; the table below gives each spec whole.
        name = f"{p.name}: {figures.short_name(source, 64)} → {figures.short_name(target, 64)} ({h.get('method')})"
        m, a = h.get("metrics") or {}, h.get("anchors") or {}
        metrics[name], plans[name] = m, a
        specs.append([p.name, source, target])
        rows.append([p.name, h.get("method"), a.get("n_fit"), a.get("n_heldout"), a.get("n_pool"),
                     a.get("strategy"), a.get("from"), m.get("cosine_mean"), m.get("top1"), m.get("mrr"),
                     m.get("cka_mapped_target"), m.get("probe_auc_ratio")])
    image = figures.map_quality(metrics, plans, out / "maps.png")
    numbers = _md_table(["map", "method", "fit", "held out", "pool", "strategy", "anchors from", "cosine",
                         "top-1", "MRR", "CKA mapped/target", "probe AUC ratio"], rows)
    numbers += ["", *_md_table(["map", "source model", "target model"], specs)]
    return [Section("Maps: held-out quality and anchor plan", image,
                    "Metrics on the held-out anchors (never used to fit); the anchor plan is what the "
                    "map file records: anchors fitted on, held out, and the pool they came from.", numbers)]


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


def _classify_sections(found: Found, out: Path) -> list[Section]:
    from sklearn.metrics import roc_auc_score

    by_output: dict[str, dict[str, Any]] = {}
    for _, data in found.results:
        if data.get("output") and "classes" in data:
            by_output[str(Path(data["output"]).resolve())] = data
    sections = []
    # (dataset, class) -> route -> (y, score): every route on one data set in one ROC figure
    overlay: dict[tuple[str, str, int], dict[str, tuple[np.ndarray, np.ndarray]]] = defaultdict(dict)
    from ..zeroshot.metrics import composition_rule
    from ..zeroshot.score_writer import read_scores

    for n, path in enumerate(found.scores):
        sf = read_scores(path)
        ids, labels, scores, ranking, predicted, meta = (sf.ids, sf.labels, sf.probabilities, sf.ranking,
                                                         sf.predicted, sf.meta)
        if labels is None:
            continue  # unlabelled samples: nothing to measure against
        classes = list(sf.classes)
        result = by_output.get(str(path.resolve()))
        metrics = (result or {}).get("metrics") or {}
        mode = metrics.get("mode") or meta.get("mode") or ("multiclass" if predicted else "multilabel")
        match, how = _matcher(classes, result)
        y = np.array([[match(lab, c) for c in classes] for lab in labels], dtype=bool).reshape(len(labels), len(classes))
        if not y.any():
            continue  # no sample carries a label any class matches: nothing to measure against
        route = _route_name(result, path)
        dataset = _dataset_name(result, path)
        # two exclusive classes give mirrored ROCs: one (the last class) says it all
        shown = classes[-1:] if len(classes) == 2 and mode == "multiclass" else classes
        for c, name in enumerate(classes):
            if name in shown and y[:, c].any() and not y[:, c].all():
                overlay[(dataset, name, len(ids))][route] = (y[:, c], ranking[:, c])
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
        sections.append(Section(f"Classification: {route}", image,
                                "ROC per class (AUC in the legend), the confusion matrix at the stated decision "
                                "rule, and the calibration curve (fraction positive per bin of predicted "
                                "probability).", numbers))
        hist = figures.score_histograms(y, scores, classes, out / f"scores-{_slug(path, n)}.png", title=f"{route}: scores by true label")
        sections.append(Section(f"Score histograms: {route}", hist,
                                "Each class's score on samples with that label (red) and without it (blue).",
                                [f"Means as in the table of \"Classification: {route}\" above."]))
    combined: list[Section] = []
    for k, ((dataset, name, n_samples), curves) in enumerate(sorted(overlay.items())):
        if len(curves) < 2:
            continue
        image = figures.roc_curves(curves, out / f"roc-{k:02d}.png",
                                   title=f"{dataset}: {name} against the rest, every route (n={n_samples})")
        rows = [[route, int(yc.sum()), len(yc), roc_auc_score(yc, sc)] for route, (yc, sc) in curves.items()]
        combined.append(Section(f"ROC of every route: {name} on {dataset}", image,
                                "One curve per route (score file) on the same samples; AUC in the legend.",
                                _md_table(["route", "positives", "samples", "AUC"], rows)))
    return combined + sections


def _dataset_name(result: dict[str, Any] | None, path: Path) -> str:
    if result:
        from ..results import to_record

        return str(to_record("classify", result).get("dataset") or path.parent.name)
    return path.parent.name


def _slug(path: Path, n: int) -> str:
    """A figure name from the input file's name, numbered so two folders' files never clash."""
    return f"{n:02d}-{''.join(ch if ch.isalnum() or ch in '-_' else '-' for ch in path.stem)}"


def _route_name(result: dict[str, Any] | None, path: Path) -> str:
    if result and result.get("route"):
        return str(result["route"])
    if result:
        from ..results import to_record

        rec = to_record("classify", result)
        return f"{rec.get('model')} on {rec.get('dataset')}"
    return path.stem


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

def _results_table(found: Found) -> list[str]:
    from ..results import table, to_record

    lines: list[str] = []
    for path, records in found.tables:
        recs = [to_record("classify", r) if "classes" in r else r for r in records]
        recs = [r for r in recs if r.get("task") == "zeroshot_classification"]
        if not recs:
            continue
        cls = next((c for c in ("pneumonia",) if f"auc_{c}" in recs[0]["metrics"]), None)
        cols = ["route"] if all("route" in r for r in recs) else ["dataset", "model"]
        metric_cols = ([f"auc_{cls}", f"auc_{cls}_ci_low", f"auc_{cls}_ci_high"] if cls else ["auc_macro"]) + ["accuracy", "n"]
        if cls:  # a stitched route beside its control: the paired difference (stitchkit.zeroshot.compare)
            metric_cols += [f"control_auc_{cls}", f"delta_auc_{cls}", f"delta_auc_{cls}_ci_low",
                            f"delta_auc_{cls}_ci_high", f"delta_auc_{cls}_p"]
        header, rows = table(recs, cols + [m for m in metric_cols if any(m in r["metrics"] for r in recs)])
        lines += [f"## Results: {path.name}", "", *_md_table(header, rows), ""]
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
    sections = (_map_sections(found.maps, out) + _sweep_sections(sweeps, out) + _head_sections(found.heads, out)
                + _benchmark_sections(found, out) + _curve_sections(found, out) + _classify_sections(found, out) + _store_sections(found, out))
    intro = _results_table(found)
    if not sections and not intro:
        raise UsageError("nothing to draw: give maps, sweep CSVs, heads, stores, score files or `--json` "
                         "results (or a folder holding them)")
    md = [f"# {title}", "", f"From {len(found.stores)} stores, {len(found.maps)} maps, {len(found.heads)} heads, "
          f"{len(found.sweeps)} sweep tables, {len(found.scores)} score files, {len(found.benchmarks)} "
          f"benchmarks and {len(found.results) + len(found.tables)} result files.", "", *intro]
    for s in sections:
        md += [f"## {s.title}", "", f"![{s.title}]({s.image.name})", "", s.caption, "", *s.numbers, ""]
    with atomic_output(out / "report.md") as tmp:
        tmp.write_text("\n".join(md), encoding="utf-8")
    with atomic_output(out / "index.html") as tmp:
        tmp.write_text(_html(title, md), encoding="utf-8")
    return {"report": str(out / "index.html"), "markdown": str(out / "report.md"),
            "figures": [str(s.image) for s in sections], "skipped": found.skipped}


def _html(title: str, md: list[str]) -> str:
    """The Markdown page as HTML (headings, images, tables, paragraphs: all report.md uses)."""
    e = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}"
             "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;font-size:90%}"
             "img{max-width:100%}</style>"]
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *body = table
            parts.append("<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in body)
                         + "</table>")
            table.clear()

    for line in md:
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in line.strip().strip("|").split(" | ")]
            if not all(set(c) <= {"-"} for c in cells):
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
    return "\n".join(parts)
