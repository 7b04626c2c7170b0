"""`stitch demo`: the whole main job on the embedded default, as a list of `stitch` commands.

Each step is an ordinary command line, printed before it runs and run in this process, so the
demo is also a script to copy. Steps whose output exists are skipped: re-running reuses work.
The data preparation (manifests, the NIH patient split) is library code
(stitchkit.datasets.demo_manifests); each step's result is taken from the output helper, not
parsed from what the command printed. To add a step, append a Step to the list ``plan`` returns.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
from stitchkit.anchors import SUITES_DIR

from stitchkit.fileio import atomic_output

from .output import emit


@dataclass
class Step:
    name: str
    argv: list[str]
    output: Path | None = None  # skip the step when this exists
    result: Path | None = None  # write the command's result here as a record (stitchkit.results)
    row: str | None = None  # label in the results table
    control: Step | None = None  # the reference through the same anchors: a paired comparison in the row
    extra: dict = field(default_factory=dict)


def plan(out: Path, m: dict[str, Path], prompts: str, quick_run: bool = False) -> list[Step]:
    """The demo as command lines; ``prompts`` names a curated set in anchors/prompts;
    ``quick_run``: `--limit`'s few images (the adaptation keeps fewer dimensions than they span)."""
    s = lambda p: str(out / p)  # noqa: E731 - short path helper for the step table
    steps: list[Step] = []
    for model in ("lite0", "lite2"):
        # Kermany and covid images keep patch tokens (the last feature map): the token heads
        # attend over them and the token map is fitted on them (docs/head.md).
        for split in ("train", "test"):
            steps.append(Step(f"embed k-{split} {model}", ["embed", str(m[f"k-{split}"]), "-m", model, "--tokens",
                                                           "-o", s(f"k-{split}-{model}.h5")]))
        # NIH Lite2 keeps tokens too: its findings sentences train the token heads of (e).
        tokens = ["--tokens"] if model == "lite2" else []
        steps.append(Step(f"embed nih {model}", ["embed", str(m["nih"]), "-m", model, *tokens, "-o", s(f"nih-{model}.h5")]))
    steps.append(Step("embed covid lite2", ["embed", str(m["covid"]), "-m", "lite2", "--tokens", "-o", s("covid-lite2.h5")]))

    # Maps Lite0 -> Lite2 over the Kermany train anchors; held-out quality on 20 % of them.
    for method in ("orthogonal", "ridge"):
        steps.append(Step(f"fit {method}", ["fit", s("k-train-lite0.h5"), s("k-train-lite2.h5"),
                                            "--method", method, "-o", s(f"lite0-to-lite2.{method}.map")],
                          output=out / f"lite0-to-lite2.{method}.map", result=out / "results" / f"fit-{method}.json"))
    # The token heads' map: ridge fitted on spatially matched patch tokens (docs/head.md).
    steps.append(Step("fit tokens", ["fit", s("k-train-lite0.h5"), s("k-train-lite2.h5"), *TOKEN_FIT,
                                     "-o", s("lite0-to-lite2.tokens.map")],
                      output=out / "lite0-to-lite2.tokens.map", result=out / "results" / "fit-tokens.json"))
    n_train = sum(1 for _ in open(m["k-train"])) - 1
    counts = [c for c in (50, 100, 250, 500, 1000, 2000, 4000) if c <= 0.8 * n_train] or [n_train // 2]
    steps.append(Step("sweep", ["sweep", s("k-train-lite0.h5"), s("k-train-lite2.h5"),
                                "--n-anchors", ",".join(map(str, counts)), "--methods", "orthogonal,affine,ridge",
                                "--seeds", "0,1,2", "-o", s("sweep.csv"), "--plot", s("sweep.png")],
                      output=out / "sweep.csv", result=out / "results" / "sweep.json"))

    # Label-derived captions (named as such) pair Kermany train images with prompt sentences.
    steps.append(Step("captions k-train", ["head", "captions", s("k-train-lite2.h5"), "-t", "minilm", "--tokens",
                                           "--from-labels", str(prompts), "-o", s("k-train-captions-minilm.h5")],
                      output=out / "k-train-captions-minilm.h5"))
    # The same pairs and seed for both heads: the token head attends over patch and word
    # tokens, the global head sees one vector a side (softmax over one key: an MLP).
    steps.append(Step("head kermany token", ["head", "train", s("k-train-lite2.h5"), s("k-train-captions-minilm.h5"),
                                             *KERMANY_HEAD, *TOKEN_HEAD, "-o", s("head-kermany-token.head")],
                      output=out / "head-kermany-token.head", result=out / "results" / "head-kermany-token.json"))
    steps.append(Step("head kermany", ["head", "train", s("k-train-lite2.h5"), s("k-train-captions-minilm.h5"),
                                       *KERMANY_HEAD, *GLOBAL_ONLY, "-o", s("head-kermany.head")],
                      output=out / "head-kermany.head", result=out / "results" / "head-kermany.json"))
    # (c) and (d): images mapped straight into MiniLM's text space over the same image-caption
    # pairs the heads saw, then cosine to the prompts (the second paper's unimodal route).
    for model in ("lite2", "lite0"):
        steps.append(Step(f"fit {model}->minilm", ["fit", s(f"k-train-{model}.h5"), s("k-train-captions-minilm.h5"),
                                                   "--method", "ridge", "-o", s(f"{model}-to-minilm.map")],
                          output=out / f"{model}-to-minilm.map", result=out / "results" / f"fit-{model}-minilm.json"))

    # Real image-note pairs (covid-notes-384): heads and a cosine map that never saw a Kermany label.
    # The heads train on the notes' standardised sentences (one drawn per image per step); the
    # cosine map on each image's sentences joined. "mixed" adds NIH's own findings of the
    # training patients as sentences (labels mined from NIH's reports; no Kermany label).
    steps.append(Step("captions covid", ["head", "captions", s("covid-lite2.h5"), "-t", "minilm", "--from-texts",
                                         "--tokens", "-o", s("covid-notes-minilm.h5")], output=out / "covid-notes-minilm.h5"))
    steps.append(Step("captions covid sentences", ["head", "captions", s("covid-lite2.h5"), "-t", "minilm", "--from-texts",
                                                   "--sentences", "--tokens", "-o", s("covid-sentences-minilm.h5")],
                      output=out / "covid-sentences-minilm.h5"))
    nih_train = ("--ids", str(m["nih-train-ids"]))
    steps.append(Step("captions nih findings", ["head", "captions", s("nih-lite2.h5"), "-t", "minilm", "--from-findings",
                                                "cxr-findings", *nih_train, "-o", s("nih-findings-minilm.h5")],
                      output=out / "nih-findings-minilm.h5"))
    steps.append(Step("captions nih sentences", ["head", "captions", s("nih-lite2.h5"), "-t", "minilm", "--from-findings",
                                                 "cxr-findings", "--sentences", "--tokens", *nih_train,
                                                 "-o", s("nih-sentences-minilm.h5")], output=out / "nih-sentences-minilm.h5"))
    sources = {"covid": (), "mixed": ("--pairs", s("nih-lite2.h5"), s("nih-sentences-minilm.h5"))}
    for pairs, more in sources.items():
        for kind, extra in (("token", ()), ("global", GLOBAL_ONLY)):
            steps.append(Step(f"head {pairs} {kind}", ["head", "train", s("covid-lite2.h5"), s("covid-sentences-minilm.h5"),
                                                       *more, *ZERO_SHOT_HEAD, *extra, "-o", s(f"head-{pairs}-{kind}.head")],
                              output=out / f"head-{pairs}-{kind}.head", result=out / "results" / f"head-{pairs}-{kind}.json"))
    steps.append(Step("fit covid lite2->minilm", ["fit", s("covid-lite2.h5"), s("covid-notes-minilm.h5"),
                                                  "--method", "ridge", "--holdout", "0", "-o", s("covid-lite2-to-minilm.map")],
                      output=out / "covid-lite2-to-minilm.map", result=out / "results" / "fit-covid-lite2-minilm.json"))
    steps.append(Step("fit mixed lite2->minilm", ["fit", f"{s('covid-lite2.h5')},{s('nih-lite2.h5')}",
                                                  f"{s('covid-notes-minilm.h5')},{s('nih-findings-minilm.h5')}",
                                                  "--method", "ridge", "--holdout", "0", "-o", s("mixed-lite2-to-minilm.map")],
                      output=out / "mixed-lite2-to-minilm.map", result=out / "results" / "fit-mixed-lite2-minilm.json"))
    # Stitched zero-shot cosine: Lite0 queries mapped into Lite2 (the token map, fitted on
    # Kermany train images as unlabelled anchors), then through the covid-notes cosine map.
    steps.append(Step("apply token map k-test", ["apply", s("lite0-to-lite2.tokens.map"), s("k-test-lite0.h5"), "--no-tokens",
                                                 "-o", s("k-test-lite0-in-lite2.h5")], output=out / "k-test-lite0-in-lite2.h5"))

    # Label-free adaptation (`stitch adapt`): each target domain's unlabelled images, in the space
    # the heads and the cosine maps read (Lite2). Kermany: its train images; NIH: the training patients'.
    adapt_dims = ("--dims", str(QUICK_ADAPT_DIMS)) if quick_run else ()
    steps.append(Step("adapt kermany", ["adapt", s("k-train-lite2.h5"), *adapt_dims, "-o", s("kermany.adapt.map")],
                      output=out / "kermany.adapt.map"))
    steps.append(Step("adapt nih", ["adapt", s("nih-lite2.h5"), *nih_train, *adapt_dims, "-o", s("nih.adapt.map")],
                      output=out / "nih.adapt.map"))
    # Controls: the reference (Lite2) through a map fitted on the same anchors as each stitched
    # route's, so that a stitched route is compared with what the map alone does to Lite2.
    for method in ("orthogonal", "ridge"):
        steps.append(Step(f"fit control {method}", ["fit", s("k-train-lite2.h5"), s("k-train-lite2.h5"), "--method", method,
                                                    "-o", s(f"lite2-to-lite2.{method}.map")],
                          output=out / f"lite2-to-lite2.{method}.map"))
    steps.append(Step("fit control tokens", ["fit", s("k-train-lite2.h5"), s("k-train-lite2.h5"), *TOKEN_FIT,
                                             "-o", s("lite2-to-lite2.tokens.map")], output=out / "lite2-to-lite2.tokens.map"))
    steps.append(Step("apply control token map k-test", ["apply", s("lite2-to-lite2.tokens.map"), s("k-test-lite2.h5"),
                                                         "--no-tokens", "-o", s("k-test-lite2-in-lite2.h5")],
                      output=out / "k-test-lite2-in-lite2.h5"))

    # NIH as a domain of its own: anchors and head on 60 % of patients, metrics on the rest.
    steps.append(Step("fit nih ridge", ["fit", s("nih-lite0.h5"), s("nih-lite2.h5"), "--method", "ridge",
                                        "--ids", str(m["nih-train-ids"]), "-o", s("nih-lite0-to-lite2.map")],
                      output=out / "nih-lite0-to-lite2.map", result=out / "results" / "fit-nih.json"))
    steps.append(Step("fit nih control", ["fit", s("nih-lite2.h5"), s("nih-lite2.h5"), "--method", "ridge",
                                          "--ids", str(m["nih-train-ids"]), "-o", s("nih-lite2-to-lite2.map")],
                      output=out / "nih-lite2-to-lite2.map"))
    steps.append(Step("captions nih", ["head", "captions", s("nih-lite2.h5"), "-t", "minilm",
                                       "--from-labels", str(prompts), "-o", s("nih-captions-minilm.h5")],
                      output=out / "nih-captions-minilm.h5"))
    steps.append(Step("head nih", ["head", "train", s("nih-lite2.h5"), s("nih-captions-minilm.h5"),
                                   "--ids", str(m["nih-train-ids"]), *GLOBAL_ONLY, "-o", s("head-nih.head")],
                      output=out / "head-nih.head", result=out / "results" / "head-nih.json"))

    def classify(row: str | None, key: str, query: str, *extra: str, control: Step | None = None) -> list[Step]:
        """The route's classify step, after its control's (a row of no table of its own)."""
        step = Step(f"classify {key}", ["classify", s(query), "--prompts", str(prompts), "--text-model", "minilm",
                                        *extra, "-o", s(f"scores/{key}.csv")],
                    output=out / "results" / f"classify-{key}.json", result=out / "results" / f"classify-{key}.json",
                    row=row, control=control)
        return [control, step] if control is not None else [step]

    def control(key: str, query: str, *extra: str) -> Step:
        return classify(None, key, query, *extra)[0]

    head, token_head = s("head-kermany.head"), s("head-kermany-token.head")
    ortho, ridge, tokens = (s(f"lite0-to-lite2.{k}.map") for k in ("orthogonal", "ridge", "tokens"))
    c_ortho, c_ridge, c_tokens = (s(f"lite2-to-lite2.{k}.map") for k in ("orthogonal", "ridge", "tokens"))
    routes = [
        classify("(a) Lite2 native + token head", "k-lite2-tokenhead", "k-test-lite2.h5", "--head", token_head),
        classify("(a) Lite2 native + global head", "k-lite2-head", "k-test-lite2.h5", "--head", head),
        classify("(b) Lite0 → Lite2 token map + token head", "k-lite0-tokens-tokenhead", "k-test-lite0.h5",
                 "--map", tokens, "--head", token_head,
                 control=control("k-lite2-tokens-tokenhead", "k-test-lite2.h5", "--map", c_tokens, "--head", token_head)),
        classify("(b) Lite0 → Lite2 orthogonal + global head", "k-lite0-ortho-head", "k-test-lite0.h5",
                 "--map", ortho, "--head", head,
                 control=control("k-lite2-ortho-head", "k-test-lite2.h5", "--map", c_ortho, "--head", head)),
        classify("(b) Lite0 → Lite2 ridge affine + global head", "k-lite0-ridge-head", "k-test-lite0.h5",
                 "--map", ridge, "--head", head,
                 control=control("k-lite2-ridge-head", "k-test-lite2.h5", "--map", c_ridge, "--head", head)),
        classify("(c) Lite2 → MiniLM text space, cosine instead of the head", "k-lite2-minilm-cosine", "k-test-lite2.h5",
                 "--map", s("lite2-to-minilm.map"), "--scoring", "cosine"),
        # (d)'s control is (c): the reference mapped into MiniLM over the same pairs.
        classify("(d) Lite0 → MiniLM text space, cosine (label-derived captions)", "k-lite0-minilm-cosine", "k-test-lite0.h5",
                 "--map", s("lite0-to-minilm.map"), "--scoring", "cosine",
                 control=control("k-lite2-minilm-cosine-control", "k-test-lite2.h5", "--map", s("lite2-to-minilm.map"),
                                 "--scoring", "cosine")),
    ]
    kermany_adapt = ("--adapt", s("kermany.adapt.map"))
    for pairs, named in (("covid", "covid notes"), ("mixed", "covid notes + NIH findings")):
        token, glob, cosine = s(f"head-{pairs}-token.head"), s(f"head-{pairs}-global.head"), s(f"{pairs}-lite2-to-minilm.map")
        # The covid-notes routes again through the Kermany adaptation map (its train images, unlabelled).
        for adapted, suffix, more in ((False, "", ()), *(((True, "-adapted", kermany_adapt),) if pairs == "covid" else ())):
            name = f"{named} + adaptation" if adapted else named
            rule = (*ZERO_SHOT_RULE, *more)
            routes += [
                classify(f"(e) {name}: token head, Lite2 native", f"k-lite2-{pairs}-tokenhead{suffix}", "k-test-lite2.h5",
                         "--head", token, *rule),
                classify(f"(e) {name}: global head, Lite2 native", f"k-lite2-{pairs}-head{suffix}", "k-test-lite2.h5",
                         "--head", glob, *rule),
                classify(f"(e) {name}: cosine, Lite2 → MiniLM", f"k-lite2-{pairs}-cosine{suffix}", "k-test-lite2.h5",
                         "--map", cosine, "--scoring", "cosine", *rule),
                classify(f"(e) {name}: token head, Lite0 → Lite2 token map", f"k-lite0-tokens-{pairs}-tokenhead{suffix}",
                         "k-test-lite0.h5", "--map", tokens, "--head", token, *rule,
                         control=control(f"k-lite2-tokens-{pairs}-tokenhead{suffix}", "k-test-lite2.h5",
                                         "--map", c_tokens, "--head", token, *rule)),
                classify(f"(e) {name}: global head, Lite0 → Lite2 ridge", f"k-lite0-ridge-{pairs}-head{suffix}",
                         "k-test-lite0.h5", "--map", ridge, "--head", glob, *rule,
                         control=control(f"k-lite2-ridge-{pairs}-head{suffix}", "k-test-lite2.h5",
                                         "--map", c_ridge, "--head", glob, *rule)),
                classify(f"(e) {name}: cosine, Lite0 → Lite2 token map → MiniLM", f"k-lite0-{pairs}-cosine{suffix}",
                         "k-test-lite0-in-lite2.h5", "--map", cosine, "--scoring", "cosine", *rule,
                         control=control(f"k-lite2-{pairs}-cosine-control{suffix}", "k-test-lite2-in-lite2.h5",
                                         "--map", cosine, "--scoring", "cosine", *rule)),
            ]
    nih_test = ("--ids", str(m["nih-test-ids"]))
    routes += [
        classify("NIH external: Lite2 + Kermany head", "nih-lite2-khead", "nih-lite2.h5", "--head", head),
        classify("NIH external: Lite0 → Lite2 (Kermany map) + Kermany head", "nih-lite0-khead", "nih-lite0.h5",
                 "--map", ridge, "--head", head,
                 control=control("nih-lite2-khead-control", "nih-lite2.h5", "--map", c_ridge, "--head", head)),
        classify("NIH by patient: Lite2 + NIH head", "nih-lite2-nhead", "nih-lite2.h5", "--head", s("head-nih.head"),
                 *nih_test),
        classify("NIH by patient: Lite0 → Lite2 (NIH map) + NIH head", "nih-lite0-nhead", "nih-lite0.h5",
                 "--map", s("nih-lite0-to-lite2.map"), "--head", s("head-nih.head"), *nih_test,
                 control=control("nih-lite2-nhead-control", "nih-lite2.h5", "--map", s("nih-lite2-to-lite2.map"),
                                 "--head", s("head-nih.head"), *nih_test)),
        # Zero-shot on NIH's held-out patients: the covid-notes head, then through NIH's adaptation
        # map (its training patients' images, unlabelled).
        classify("NIH by patient, zero-shot: Lite2 + covid-notes global head", "nih-lite2-covid-head", "nih-lite2.h5",
                 "--head", s("head-covid-global.head"), *ZERO_SHOT_RULE, *nih_test),
        classify("NIH by patient, zero-shot: Lite2 + adaptation + covid-notes global head", "nih-lite2-covid-head-adapted",
                 "nih-lite2.h5", "--head", s("head-covid-global.head"), "--adapt", s("nih.adapt.map"), *ZERO_SHOT_RULE,
                 *nih_test),
    ]
    steps += [step for route in routes for step in route]
    # The papers' table on the data at hand (Kermany test, NIH by patient, NIH findings) through
    # the zero-shot cosine route of (e): no Kermany or NIH label was used to fit it.
    steps.append(Step("benchmark", ["benchmark", s("demo-suite.yaml"), "--store", f"kermany={s('k-test-lite2.h5')}",
                                    "--store", f"nih={s('nih-lite2.h5')}", "--map", s("covid-lite2-to-minilm.map"),
                                    "--scoring", "cosine", "-t", "minilm", "-o", s("benchmark")],
                      output=out / "benchmark" / "benchmark.json"))
    steps.append(Step("report", ["report", str(out), "-o", s("report")]))
    return steps


#: Options shared by the steps of one kind, so paired routes differ only where the table says.
TOKEN_FIT = ("--method", "ridge", "--tokens")
KERMANY_HEAD = ("--batch-size", "64", "--epochs", "10", "--seed", "0")  # 5,216 pairs
# The token head trains robust to a coarser query grid (Lite0 7x7 mapped onto 9x9): docs/head.md.
TOKEN_HEAD = ("--token-dropout", "0.5", "--token-coarsen", "1")
ZERO_SHOT_HEAD = ("--seed", "0")  # 185 covid images (+ 611 NIH): the defaults' step budget
GLOBAL_ONLY = ("--no-image-tokens", "--no-text-tokens")
ZERO_SHOT_RULE = ("--prior", "mixture")  # label-free decision rule on the unlabelled queries


QUICK_STEPS = ("--min-steps", "30")  # `stitch demo --limit`: head training steps at least
QUICK_ADAPT_DIMS = 4  # `stitch demo --limit`: a few images span few dimensions


def quick(step: Step) -> Step:
    """The step as `--limit` runs it: head training with QUICK_STEPS."""
    if step.argv[:2] == ["head", "train"]:
        step.argv = [*step.argv[:2], *QUICK_STEPS, *step.argv[2:]]
    return step


KINDS = {"fit": "fit", "sweep": "sweep", "classify": "classify", "head": "head"}  # argv[0] -> record kind


def run_step(step: Step) -> dict | None:
    """Run one step's command in this process; its result becomes a record in ``step.result``.

    The command's result is taken from the output helper (cli.output.capture), not parsed back
    from what it printed, and written as a flat record (stitchkit.results).
    """
    from stitchkit.results import to_record

    from .main import cli
    from .output import capture

    with capture() as got:
        cli.main(args=step.argv, prog_name="stitch", standalone_mode=False)
    if step.result is None or not got:
        return None
    result, command = got[-1]
    record = to_record(KINDS[step.argv[0]], result, command=command)
    if step.row:
        record = {"route": step.row, "command": "stitch " + shlex.join(step.argv), **record}
    step.result.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(step.result) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))
    return record


def results_table(steps: list[Step]) -> list[dict]:
    """The classify records of the steps that name a route, in step order.

    Result files written by an older stitchkit (raw `--json` output) are converted, so a
    re-run over an old folder still gives the table.
    """
    from stitchkit.results import to_record

    rows = []
    for step in steps:
        if step.row and step.result and step.result.exists():
            argv = step.argv
            params = {"ids_file": argv[argv.index("--ids") + 1]} if "--ids" in argv else {}
            record = to_record(KINDS[argv[0]], json.loads(step.result.read_text()),
                               command={"command": f"stitch {argv[0]}", "params": params})
            control = {}
            if step.control is not None:
                record["metrics"] = {**record["metrics"], **control_metrics(step, "pneumonia")}
                control = {"control_command": "stitch " + shlex.join(step.control.argv)}
            rows.append({"route": step.row, "command": "stitch " + shlex.join(step.argv), **control, **record})
    return rows


def control_metrics(step: Step, positive: str) -> dict:
    """The row's control (the reference through the same anchors and adaptation) and the paired
    difference of their AUCs on the same images: bootstrap 95 % interval and DeLong's p."""
    from stitchkit.zeroshot.compare import paired_comparison
    from stitchkit.zeroshot.prompts import load_prompts

    scores = lambda s: Path(s.argv[s.argv.index("-o") + 1])  # noqa: E731 - the step's score file
    argv = step.argv
    found = paired_comparison(scores(step), scores(step.control), load_prompts(argv[argv.index("--prompts") + 1]),
                              positive)
    low, high = found["ci"]["difference"]
    return {f"control_auc_{positive}": found["auc_b"], f"delta_auc_{positive}": found["difference"],
            f"delta_auc_{positive}_ci_low": low, f"delta_auc_{positive}_ci_high": high,
            f"delta_auc_{positive}_p": found["delong"]["p_value"]}


def write_results(out: Path, steps: list[Step]) -> list[dict]:
    """The results table as records in ``out/results/demo-results.json``; returns them."""
    rows = results_table(steps)
    path, text = out / "results" / "demo-results.json", json.dumps(rows, indent=1, default=str)
    if not path.exists() or path.read_text() != text:  # unchanged: the report drawn from it stays current
        with atomic_output(path) as tmp:
            tmp.write_text(text)
    return rows


def report_is_current(out: Path, steps: list[Step]) -> bool:
    """Whether ``out/report`` was drawn after every step's output and the results table were
    last written (a step re-run, or a new row, makes it stale)."""
    page = out / "report" / "index.html"
    if not page.exists():
        return False
    made = [out / "results" / "demo-results.json", *(p for step in steps for p in (step.output, step.result) if p)]
    drawn = page.stat().st_mtime
    return all(p.stat().st_mtime <= drawn for p in made if p.exists())


def format_table(records: list[dict]) -> list[str]:
    lines = [f"{'route':72} {'AUC pneumonia':>14} {'95% CI':>16} {'acc':>6} {'n':>5}  {'Δ vs control [95% CI], p':>30}"]
    for r in records:
        m = r["metrics"]
        auc, lo, hi = m.get("auc_pneumonia"), m.get("auc_pneumonia_ci_low"), m.get("auc_pneumonia_ci_high")
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
        acc = m.get("accuracy")
        delta = m.get("delta_auc_pneumonia")
        paired = "" if delta is None else (f"{delta:+.3f} [{m['delta_auc_pneumonia_ci_low']:+.3f}, "
                                           f"{m['delta_auc_pneumonia_ci_high']:+.3f}], {m['delta_auc_pneumonia_p']:.2g}")
        lines.append(f"{r['route']:72} {'-' if auc is None else f'{auc:.3f}':>14} {ci:>16} "
                     f"{'-' if acc is None else f'{acc:.3f}':>6} {m.get('n') or '':>5}  {paired:>30}")
    return lines


@click.command()
@click.option("-o", "--output", "out", default="demo-out", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder for every store, map, head, score and the report.")
@click.option("--data", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Data folder (default: $STITCHKIT_DATA, then ../shared/data).")
@click.option("--limit", type=click.IntRange(min=4), default=None,
              help="Keep at most this many images per class and split (a quick run: heads train 30 steps at least).")
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
    from stitchkit.datasets import data_root, demo_manifests

    root = data or data_root()
    t0 = time.perf_counter()
    steps = plan(out, demo_manifests(root, out / "manifests", limit), "pneumonia", quick_run=bool(limit))
    if limit:  # a quick run: heads on a few images need not take the full step budget
        steps = [quick(step) for step in steps]
    # The benchmark suite reads the NIH test ids beside it (manifests/nih-test-ids.txt).
    shutil.copyfile(SUITES_DIR / "demo.yaml", out / "demo-suite.yaml")
    for sub in ("scores", "results"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for n, step in enumerate(steps, 1):
        if step.argv[0] == "report":
            write_results(out, steps)  # the report draws the table with its controls
            if report_is_current(out, steps):
                click.echo(f"[{n}/{len(steps)}] {step.name}: done already (drawn after every input)", err=True)
                continue
        if step.output is not None and step.output.exists():
            click.echo(f"[{n}/{len(steps)}] {step.name}: done already ({step.output})", err=True)
            continue
        click.echo(f"[{n}/{len(steps)}] stitch {shlex.join(step.argv)}", err=True)
        with contextlib.redirect_stdout(sys.stderr):  # each step's own output is progress here
            run_step(step)
    rows = write_results(out, steps)
    minutes = (time.perf_counter() - t0) / 60
    lines = [*format_table(rows), f"results: {out / 'results' / 'demo-results.json'}",
             f"report: {out / 'report' / 'index.html'}   ({minutes:.1f} min)"]
    emit({"results": rows, "report": str(out / "report"), "minutes": minutes}, as_json=as_json, text="\n".join(lines))
