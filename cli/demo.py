"""`stitch demo`: the whole main job on the embedded default, as a list of `stitch` commands.

Each step is an ordinary command line, printed before it runs and run in this process, so the
demo is also a script to copy. Steps whose output exists are skipped: re-running reuses work.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from .output import emit


@dataclass
class Step:
    name: str
    argv: list[str]
    output: Path | None = None  # skip the step when this exists
    result: Path | None = None  # capture --json stdout here (for the results table and report)
    row: str | None = None  # label in the results table
    extra: dict = field(default_factory=dict)


def _manifests(data: Path, out: Path, limit: int | None) -> dict[str, Path]:
    """Manifests (CSV/JSONL, absolute paths) for the four data sets, capped for quick runs."""
    import csv

    from stitchkit.datasets import iu_reports, nih_rows, write_csv, write_jsonl

    out.mkdir(parents=True, exist_ok=True)

    def cap(rows: list[dict], key) -> list[dict]:  # noqa: ANN001 - a key function
        if not limit:
            return rows
        kept, seen = [], {}
        for row in rows:
            k = key(row)
            if seen.get(k, 0) < limit:
                seen[k] = seen.get(k, 0) + 1
                kept.append(row)
        return kept

    paths: dict[str, Path] = {}
    kroot = data / "kermany-pneumonia-224"
    with open(kroot / "labels.csv", newline="") as fh:
        krows = list(csv.DictReader(fh))
    for split in ("train", "test"):
        rows = [{"id": r["path"], "path": str(kroot / r["path"]), "label": r["label"],
                 "subtype": r["subtype"]} for r in krows if r["split"] == split]
        paths[f"k-{split}"] = write_csv(cap(rows, lambda r: r["label"]), out / f"kermany-{split}.csv")

    nroot = data / "nih-pneumonia-256"
    nrows = [{**r, "path": str(nroot / r["path"])} for r in nih_rows(nroot)]
    nrows = cap(nrows, lambda r: r["label"])
    paths["nih"] = write_csv(nrows, out / "nih.csv")
    # Split NIH by patient (never by image): 60 % of patients for anchors and the head.
    patients = sorted({r["group"] for r in nrows})
    random.Random(0).shuffle(patients)
    train_patients = set(patients[: int(0.6 * len(patients))])
    for name, keep in (("nih-train", True), ("nih-test", False)):
        ids = [r["id"] for r in nrows if (r["group"] in train_patients) == keep]
        (out / f"{name}-ids.txt").write_text("\n".join(ids) + "\n")
        paths[f"{name}-ids"] = out / f"{name}-ids.txt"

    croot = data / "covid-notes-384"
    with open(croot / "labels.csv", newline="") as fh:
        crows = [{"id": r["path"], "path": str(croot / r["path"]), "label": r["label"],
                  "group": r["patientid"], "text": r["notes"]}
                 for r in csv.DictReader(fh) if r["notes"].strip()]
    paths["covid"] = write_csv(cap(crows, lambda r: "all") if limit else crows, out / "covid.csv")

    iu = iu_reports(data / "iu-xray-reports" / "NLMCXR_reports.tgz")
    paths["iu"] = write_jsonl(iu[: 10 * limit] if limit else iu, out / "iu-reports.jsonl")
    return paths


def plan(out: Path, m: dict[str, Path], prompts: str) -> list[Step]:
    """The demo as command lines; ``prompts`` names a curated set in anchors/prompts."""
    s = lambda p: str(out / p)  # noqa: E731 - short path helper for the step table
    steps: list[Step] = []
    for model in ("lite0", "lite2"):
        for split in ("train", "test"):
            steps.append(Step(f"embed k-{split} {model}",
                              ["embed", str(m[f"k-{split}"]), "-m", model, "-o", s(f"k-{split}-{model}.h5")]))
        steps.append(Step(f"embed nih {model}", ["embed", str(m["nih"]), "-m", model, "-o", s(f"nih-{model}.h5")]))
        steps.append(Step(f"embed covid {model}", ["embed", str(m["covid"]), "-m", model, "-o", s(f"covid-{model}.h5")]))

    # Maps Lite0 -> Lite2 over the Kermany train anchors; held-out quality on 20 % of them.
    for method in ("orthogonal", "ridge"):
        steps.append(Step(f"fit {method}", ["fit", s("k-train-lite0.h5"), s("k-train-lite2.h5"),
                                            "--method", method, "-o", s(f"lite0-to-lite2.{method}.map"), "--json"],
                          output=out / f"lite0-to-lite2.{method}.map", result=out / "results" / f"fit-{method}.json"))
    n_train = sum(1 for _ in open(m["k-train"])) - 1
    counts = [c for c in (50, 100, 250, 500, 1000, 2000, 4000) if c <= 0.8 * n_train] or [n_train // 2]
    steps.append(Step("sweep", ["sweep", s("k-train-lite0.h5"), s("k-train-lite2.h5"),
                                "--n-anchors", ",".join(map(str, counts)), "--methods", "orthogonal,affine,ridge",
                                "--seeds", "0,1,2", "-o", s("sweep.csv"), "--plot", s("sweep.png"), "--json"],
                      output=out / "sweep.csv", result=out / "results" / "sweep.json"))

    # Label-derived captions (named as such) pair Kermany train images with prompt sentences.
    steps.append(Step("captions k-train", ["head", "captions", s("k-train-lite2.h5"), "-m", "minilm",
                                           "--from-labels", str(prompts), "-o", s("k-train-captions-minilm.h5")],
                      output=out / "k-train-captions-minilm.h5"))
    steps.append(Step("head kermany", ["head", "train", s("k-train-lite2.h5"), s("k-train-captions-minilm.h5"),
                                       "-o", s("head-kermany.head"), "--json"],
                      output=out / "head-kermany.head", result=out / "results" / "head-kermany.json"))
    # (c) and (d): images mapped straight into MiniLM's text space over the same image-caption
    # pairs the head saw, then cosine to the prompts (the second paper's unimodal route).
    for model in ("lite2", "lite0"):
        steps.append(Step(f"fit {model}->minilm", ["fit", s(f"k-train-{model}.h5"), s("k-train-captions-minilm.h5"),
                                                   "--method", "ridge", "-o", s(f"{model}-to-minilm.map"), "--json"],
                          output=out / f"{model}-to-minilm.map", result=out / "results" / f"fit-{model}-minilm.json"))

    # Real image-note pairs (covid-notes-384): a head that never saw a Kermany label.
    steps.append(Step("captions covid", ["head", "captions", s("covid-lite2.h5"), "-m", "minilm", "--from-texts",
                                         "-o", s("covid-notes-minilm.h5")], output=out / "covid-notes-minilm.h5"))
    # Few pairs (217): smaller batches and more patience than the defaults.
    steps.append(Step("head covid", ["head", "train", s("covid-lite2.h5"), s("covid-notes-minilm.h5"),
                                     "--batch-size", "32", "--epochs", "60", "--patience", "10",
                                     "-o", s("head-covid.head"), "--json"],
                      output=out / "head-covid.head", result=out / "results" / "head-covid.json"))

    # NIH as a domain of its own: anchors and head on 60 % of patients, metrics on the rest.
    steps.append(Step("fit nih ridge", ["fit", s("nih-lite0.h5"), s("nih-lite2.h5"), "--method", "ridge",
                                        "--anchors", str(m["nih-train-ids"]), "-o", s("nih-lite0-to-lite2.map"), "--json"],
                      output=out / "nih-lite0-to-lite2.map", result=out / "results" / "fit-nih.json"))
    steps.append(Step("captions nih", ["head", "captions", s("nih-lite2.h5"), "-m", "minilm",
                                       "--from-labels", str(prompts), "-o", s("nih-captions-minilm.h5")],
                      output=out / "nih-captions-minilm.h5"))
    steps.append(Step("head nih", ["head", "train", s("nih-lite2.h5"), s("nih-captions-minilm.h5"),
                                   "--ids", str(m["nih-train-ids"]), "-o", s("head-nih.head"), "--json"],
                      output=out / "head-nih.head", result=out / "results" / "head-nih.json"))

    def classify(row: str, key: str, query: str, *extra: str) -> Step:
        return Step(f"classify {key}", ["classify", s(query), "--prompts", str(prompts), "--text-model", "minilm",
                                        *extra, "-o", s(f"scores/{key}.csv"), "--json"],
                    output=out / "results" / f"classify-{key}.json", result=out / "results" / f"classify-{key}.json",
                    row=row)

    head, ortho, ridge = s("head-kermany.head"), s("lite0-to-lite2.orthogonal.map"), s("lite0-to-lite2.ridge.map")
    steps += [
        classify("(a) Lite2 native + head", "k-lite2-head", "k-test-lite2.h5", "--head", head),
        classify("(b) Lite0 → Lite2 orthogonal + head", "k-lite0-ortho-head", "k-test-lite0.h5", "--map", ortho, "--head", head),
        classify("(b) Lite0 → Lite2 ridge affine + head", "k-lite0-ridge-head", "k-test-lite0.h5", "--map", ridge, "--head", head),
        classify("(c) Lite2 → MiniLM text space, cosine instead of the head", "k-lite2-minilm-cosine", "k-test-lite2.h5",
                 "--map", s("lite2-to-minilm.map"), "--scoring", "cosine"),
        classify("(d) Lite0 → MiniLM text space, cosine (label-derived captions)", "k-lite0-minilm-cosine", "k-test-lite0.h5",
                 "--map", s("lite0-to-minilm.map"), "--scoring", "cosine"),
        classify("(e) covid-notes head, Lite2 native (zero-shot)", "k-lite2-covidhead", "k-test-lite2.h5", "--head", s("head-covid.head")),
        classify("(e) covid-notes head, Lite0 → Lite2 ridge (zero-shot)", "k-lite0-ridge-covidhead", "k-test-lite0.h5",
                 "--map", ridge, "--head", s("head-covid.head")),
        classify("NIH external: Lite2 + Kermany head", "nih-lite2-khead", "nih-lite2.h5", "--head", head),
        classify("NIH external: Lite0 → Lite2 (Kermany map) + Kermany head", "nih-lite0-khead", "nih-lite0.h5", "--map", ridge, "--head", head),
        classify("NIH by patient: Lite2 + NIH head", "nih-lite2-nhead", "nih-lite2.h5", "--head", s("head-nih.head"),
                 "--ids", str(m["nih-test-ids"])),
        classify("NIH by patient: Lite0 → Lite2 (NIH map) + NIH head", "nih-lite0-nhead", "nih-lite0.h5",
                 "--map", s("nih-lite0-to-lite2.map"), "--head", s("head-nih.head"), "--ids", str(m["nih-test-ids"])),
    ]
    steps.append(Step("report", ["report", str(out), "-o", s("report")]))
    return steps


def run_step(step: Step) -> dict | None:
    from .main import cli

    if step.result is not None:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            cli.main(args=step.argv, prog_name="stitch", standalone_mode=False)
        data = json.loads(buffer.getvalue())
        step.result.write_text(json.dumps(data, indent=1, default=str))
        return data
    cli.main(args=step.argv, prog_name="stitch", standalone_mode=False)
    return None


def results_table(steps: list[Step]) -> list[dict]:
    rows = []
    for step in steps:
        if step.row and step.result and step.result.exists():
            metrics = json.loads(step.result.read_text()).get("metrics") or {}
            ci = metrics.get("ci", {})
            rows.append({
                "route": step.row,
                "auc_pneumonia": (metrics.get("auc") or {}).get("pneumonia"),
                "auc_ci": (ci.get("auc") or {}).get("pneumonia"),
                "accuracy": metrics.get("accuracy"),
                "n": metrics.get("n"),
                "command": "stitch " + shlex.join(step.argv[:-1]),
            })
    return rows


@click.command()
@click.option("-o", "--output", "out", default="demo-out", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder for every store, map, head, score and the report.")
@click.option("--data", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Data folder (default: $STITCHKIT_DATA, then ../shared/data).")
@click.option("--limit", type=click.IntRange(min=4), default=None,
              help="Keep at most this many images per class and split (a quick run).")
@click.option("--json", "as_json", is_flag=True, help="Print the results table as JSON.")
def demo(out: Path, data: Path | None, limit: int | None, as_json: bool) -> None:
    """Run the whole pipeline on the public chest X-ray sets: embed, fit, train, classify, report.

    Kermany train images are the anchors and the head's pairs; Kermany test, NIH and the
    covid-notes set measure. Re-running skips finished steps.

    \b
    Examples:
      stitch demo
      stitch demo -o /tmp/quick --limit 30
    """
    from stitchkit.datasets import data_root

    root = data or data_root()
    t0 = time.perf_counter()
    steps = plan(out, _manifests(root, out / "manifests", limit), "pneumonia")
    for sub in ("scores", "results"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for n, step in enumerate(steps, 1):
        if step.output is not None and step.output.exists():
            click.echo(f"[{n}/{len(steps)}] {step.name}: done already ({step.output})", err=True)
            continue
        click.echo(f"[{n}/{len(steps)}] stitch {shlex.join(step.argv)}", err=True)
        run_step(step)
    rows = results_table(steps)
    minutes = (time.perf_counter() - t0) / 60
    lines = [f"{'route':66} {'AUC pneumonia':>14} {'95% CI':>16} {'acc':>6} {'n':>5}"]
    for r in rows:
        ci = f"[{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]" if r["auc_ci"] else ""
        auc = f"{r['auc_pneumonia']:.3f}" if r["auc_pneumonia"] is not None else "-"
        acc = f"{r['accuracy']:.3f}" if r["accuracy"] is not None else "-"
        lines.append(f"{r['route']:66} {auc:>14} {ci:>16} {acc:>6} {r['n'] or '':>5}")
    lines.append(f"report: {out / 'report' / 'index.html'}   ({minutes:.1f} min)")
    (out / "results" / "table.json").write_text(json.dumps(rows, indent=1))
    emit({"results": rows, "report": str(out / "report"), "minutes": minutes}, as_json=as_json, text="\n".join(lines))
