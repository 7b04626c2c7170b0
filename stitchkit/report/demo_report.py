"""The report of a `stitch demo` folder: PNG figures and a page (Markdown and HTML) holding them.

Expected layout (what `stitch demo` writes): ``k-test-lite0.h5``, ``k-test-lite2.h5``,
``lite0-to-lite2.{orthogonal,ridge}.map``, ``results/sweep.json``, ``scores/*.csv`` and
``results/table.json``.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError
from ..fileio import atomic_output
from . import figures

ROC_ROUTES = {
    "k-lite2-head": "Lite2 native + head",
    "k-lite0-ortho-head": "Lite0→Lite2 orthogonal + head",
    "k-lite0-ridge-head": "Lite0→Lite2 ridge + head",
    "k-lite2-minilm-cosine": "Lite2→MiniLM cosine (label captions)",
    "k-lite0-minilm-cosine": "Lite0→MiniLM cosine (label captions)",
    "k-lite2-covidhead": "covid-notes head, Lite2 (zero-shot)",
}
DATA_CREDIT = (
    "Data: Kermany et al., Mendeley Data doi 10.17632/rscbjbr9sj.2 (CC BY 4.0); NIH ChestX-ray14, "
    "NIH Clinical Center (Wang et al., CVPR 2017); COVID-19 image data collection (Cohen et al., "
    "arXiv 2006.11988), per-image licences."
)


def _is_pneumonia(label: str) -> bool:
    from ..zeroshot.prompts import load_prompts

    cls = next(c for c in load_prompts("pneumonia").classes if c.name == "pneumonia")
    return cls.matches(label)


def build_report(folder: str | Path, out: str | Path) -> dict[str, Any]:
    """Draw every figure the folder has the inputs for; write index.html and report.md."""
    from ..maps import load_map
    from ..store import EmbeddingStore

    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder: give the output folder of `stitch demo`")
    out.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, Path, str]] = []

    sweep = folder / "results" / "sweep.json"  # what `stitch sweep --json` printed
    if sweep.exists():
        from ..maps.api import plot_sweep

        summary = json.loads(sweep.read_text())["summary"]
        made.append(("Held-out quality against the anchor count",
                     plot_sweep(summary, out / "anchor-curves.png",
                                title="EfficientNet-Lite0 → Lite2, Kermany train anchors; held-out anchors, mean ± std over seeds"),
                     "Each point: maps fitted on that many anchors, measured on held-out anchors."))

    curves = {}
    for key, name in ROC_ROUTES.items():
        path = folder / "scores" / f"{key}.csv"
        if path.exists():
            curves[name] = figures.read_scores(path, "pneumonia", _is_pneumonia)
    if curves:
        n = len(next(iter(curves.values()))[0])
        made.append(("ROC: normal vs pneumonia on Kermany test",
                     figures.roc_curves(curves, out / "roc-kermany.png",
                                        title=f"Kermany test ({n} images): pneumonia vs normal"),
                     "Native Lite2, Lite0 stitched into Lite2, cosine scoring and the unimodal route."))

    heat = folder / "scores" / "k-lite0-ridge-head.csv"
    if heat.exists():
        import csv

        with open(heat, newline="") as fh:
            rows = list(csv.DictReader(fh))
        rng = np.random.default_rng(0)
        pick = sorted(rng.choice(len(rows), size=min(60, len(rows)), replace=False))
        classes = [c for c in rows[0] if c not in ("id", "label", "predicted")]
        scores = np.array([[float(rows[i][c]) for c in classes] for i in pick])
        made.append(("Image–prompt scores",
                     figures.score_heatmap([rows[i]["id"] for i in pick], [rows[i]["label"] for i in pick],
                                           scores, classes, out / "scores-heatmap.png",
                                           title=f"Lite0 → Lite2 (ridge) + head: {len(pick)} Kermany test images"),
                     "Rows grouped by the true label; a good route lights the matching column."))

    src, tgt = folder / "k-test-lite0.h5", folder / "k-test-lite2.h5"
    maps = {m: folder / f"lite0-to-lite2.{m}.map" for m in ("orthogonal", "ridge")}
    if src.exists() and tgt.exists() and any(p.exists() for p in maps.values()):
        with EmbeddingStore(src) as s, EmbeddingStore(tgt) as t:
            ids = [i for i in t.ids if i in set(s.ids)]
            X, Y = s.read(s.index_of(ids)), t.read(t.index_of(ids))
            labels = t.labels[t.index_of(ids)] if t.labels is not None else np.array(["?"] * len(ids))
        cosines, mapped_ridge = {}, None
        for name, path in maps.items():
            if path.exists():
                Z = load_map(path).transform(X)
                cosines[name] = np.sum(Z * Y, 1) / (np.linalg.norm(Z, axis=1) * np.linalg.norm(Y, axis=1) + 1e-12)
                mapped_ridge = Z if name == "ridge" or mapped_ridge is None else mapped_ridge
        made.append(("Cosine between mapped Lite0 and true Lite2",
                     figures.cosine_histograms(cosines, out / "cosine-histograms.png",
                                               title=f"Kermany test images never used as anchors (n={len(ids)})"),
                     "How close each mapped image lands to its own Lite2 embedding."))
        made.append(("PCA of native and mapped embeddings",
                     figures.pca_scatter(Y, mapped_ridge, labels, out / "pca.png",
                                         title="Kermany test in Lite2 space: native (o) and Lite0 mapped by ridge (x)",
                                         names=("Lite2 native", "Lite0 mapped")),
                     "Axes are the top principal components of the native Lite2 embeddings."))

    table = folder / "results" / "table.json"
    rows = json.loads(table.read_text()) if table.exists() else []
    page = _markdown(made, rows)
    with atomic_output(out / "report.md") as tmp:
        tmp.write_text(page)
    with atomic_output(out / "index.html") as tmp:
        tmp.write_text(_html(made, rows))
    return {"report": str(out / "index.html"), "markdown": str(out / "report.md"),
            "figures": [str(p) for _, p, _ in made]}


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))


def _markdown(made: list[tuple[str, Path, str]], rows: list[dict]) -> str:
    lines = ["# stitchkit demo report", "", DATA_CREDIT, ""]
    if rows:
        lines += ["| route | AUC pneumonia | 95 % CI | accuracy | n |", "|---|---|---|---|---|"]
        for r in rows:
            ci = f"{r['auc_ci'][0]:.3f}–{r['auc_ci'][1]:.3f}" if r.get("auc_ci") else ""
            lines.append(f"| {r['route']} | {_fmt(r['auc_pneumonia'])} | {ci} | {_fmt(r['accuracy'])} | {r['n']} |")
        lines.append("")
    for title, path, caption in made:
        lines += [f"## {title}", "", f"![{title}]({path.name})", "", caption, ""]
    return "\n".join(lines)


def _html(made: list[tuple[str, Path, str]], rows: list[dict]) -> str:
    e = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><title>stitchkit demo report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
             "img{max-width:100%}</style>",
             "<h1>stitchkit demo report</h1>", f"<p>{e(DATA_CREDIT)}</p>"]
    if rows:
        parts.append("<table><tr><th>route</th><th>AUC pneumonia</th><th>95 % CI</th><th>accuracy</th><th>n</th><th>command</th></tr>")
        for r in rows:
            ci = f"{r['auc_ci'][0]:.3f}–{r['auc_ci'][1]:.3f}" if r.get("auc_ci") else ""
            parts.append(f"<tr><td>{e(r['route'])}</td><td>{_fmt(r['auc_pneumonia'])}</td><td>{ci}</td>"
                         f"<td>{_fmt(r['accuracy'])}</td><td>{r['n']}</td><td><code>{e(r['command'])}</code></td></tr>")
        parts.append("</table>")
    for title, path, caption in made:
        parts.append(f"<h2>{e(title)}</h2><img src='{e(path.name)}' alt='{e(title)}'><p>{e(caption)}</p>")
    return "\n".join(parts)
