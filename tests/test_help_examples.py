"""Every `--help` example runs as printed (issue 23, item 5), in a folder of real files named as
the examples name them: the run's 760 Kermany images through Lite0 and Lite2 (with tokens; the
session's ``kermany_base``), their label captions, IU reports, and what earlier examples write
(maps, heads, scores) for later ones.

Examples that need what CI does not have are listed in ``NOT_RUN`` with the reason; a test
checks that every other example ran, so a new example is either run or explained.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import shlex
import shutil
from pathlib import Path

import click
import pytest
from stitchkit.cli.main import COMMANDS, cli

from stitchkit.store import EmbeddingStore
from tests.conftest import BASE_PER_CLASS, PER_CLASS, copy_store, kermany_rows, write_csv
from tests.faults.helpers import Result, run_inprocess
from tests.test_cli_help import help_examples

# Order: each command's examples may use what an earlier command wrote.
ORDER = ["models", "datasets", "embed", "export", "import", "merge", "anchors select", "fit", "apply", "adapt", "sweep",
         "head captions", "head train", "classify", "explain", "benchmark", "info", "results", "report", "demo"]
NOT_RUN = {
    "stitch models --check \"timm:efficientnet_lite0?weights=/models/lite0.pth&bn_eps=0.001&crop_pct=1.0\"":
        "a placeholder path; the same check runs on the packaged file in tests/test_encoder_specs.py",
    "stitch embed ../shared/data/kermany-pneumonia-224/train -m lite2 -o k-train-lite2.h5 --tokens":
        "5,216 images: the demo runs it; the 624-image example above runs",
    "stitch embed images/ -m lite0 -o all.h5 --engine ray --address 10.0.0.1:6379": "a Ray cluster",
    'stitch datasets "nih:/data/nih?split=test&views=pa"': "a placeholder folder; tests/test_cxr_nih.py reads NIH's layout",
    'stitch datasets "nih:/data/nih?views=all" -o nih.csv': "a placeholder folder; tests/test_cli_datasets.py writes one",
    "stitch embed dicoms/ -m lite0 -o cxr.h5 --dicom-tags default": "DICOM inputs: tests/test_inputs_dicom.py",
    "stitch embed dicoms/ -m lite0 -o cxr-stored.h5 --grey-range stored": "DICOM inputs: tests/test_inputs_dicom.py",
    "stitch embed 'shards/{00000..00099}.tar' -m lite0 -o wds.h5 --label-from json:label --shard 0/4":
        "WebDataset shards: tests/test_inputs_webdataset.py",
    "stitch embed hf-dataset/ -m lite0 -o hf.h5 --image-column image": "HF datasets: tests/test_inputs_hf.py",
    "stitch import clip-retrieval-out/ -o laion-subset.h5": "a clip-retrieval run; import of an export runs",
    "stitch export big.h5 -o big-emb --chunk-size 100000 --dtype float16": "a large store; export runs above",
    "autofaiss build_index --embeddings lite0-emb/img_emb --index_path knn.index --index_infos_path infos.json":
        "autofaiss is not a dependency",
    "stitch fit minilm.h5 mpnet.h5 -o text.map --ids anchor-ids.txt --alpha 10": "mpnet (make mpnet) is optional",
    "stitch fit minilm.h5 mpnet.h5 --dry-run": "mpnet (make mpnet) is optional",
    "stitch sweep minilm.h5 mpnet.h5 --methods orthogonal,ridge --seeds 0,1 -o sweep.json --json":
        "mpnet (make mpnet) is optional",
    "stitch fit 'shards/lite0-*.h5' 'shards/lite2-*.h5' -o l0-l2-shards.map --engine ray --name shards": "Ray: tests/test_fit_shards.py",
    "stitch sweep lite0.h5 lite2.h5 --n-anchors 50,250,500,1000,2000 -o sweep.csv --plot sweep.png":
        "2,000 anchors; the same sweep at 50,100 runs",
    "stitch head captions covid-lite2.h5 --from-texts --standardiser-cmd \"./my-llm --rewrite\" -t minilm -o c.h5":
        "an LLM wrapper of the user's",
    "stitch head train k-train-lite2.h5 k-train-captions-minilm.h5 -o head-gpu.st --device cuda --precision bf16":
        "a GPU (tests/test_devices.py checks the refusal without one; benchmarks/gpu_check.sh runs it)",
    "stitch benchmark papers --store nih=nih-test-lite0.h5 --store chexpert=chexpert-lite0.h5 --dataset chestxray14 "
    "--dataset chexpert --map lite0-to-lite2.map --head head.st -o papers":
        "the published NIH and CheXpert sets; tests/test_benchmark.py runs suites on Kermany",
    "stitch demo": "the demo itself (make demo); tests/test_demo.py runs it with --limit",
    "stitch demo -o /tmp/quick --limit 30": "tests/test_demo.py runs the demo with --limit",
    "stitch results demo-out/results/demo-results.json --columns route,auc_pneumonia,accuracy,n -o table.md":
        "runs on docs/results/demo-results.json in tests/test_first_hour.py",
}
EXTRA = {  # cheaper stand-ins run in their place
    "sweep": ["stitch sweep lite0.h5 lite2.h5 --n-anchors 50,100 --seeds 0 -o sweep.csv --plot sweep.png"],
}


def _command(path: str) -> click.Command:
    command = cli
    for part in path.split():
        command = command.get_command(click.Context(command), part)
    return command


def examples(path: str) -> list[str]:
    """The example lines of ``stitch PATH --help`` as the user reads them."""
    return help_examples(_command(path).help or "")


def _world(root: Path, data: Path, base: dict[str, Path]) -> None:
    """Files named as the examples name them, made by stitchkit from real data: the run's 760
    Kermany images through Lite0 and Lite2 (tokens included) split into train and test stores."""
    rows = kermany_rows(data, BASE_PER_CLASS)
    chosen = {split: [r for r in rows if r["id"].startswith(f"{split}/")] for split in ("train", "test")}
    for split, picked in chosen.items():
        write_csv(picked, root / f"{split}.csv")
    (root / "anchor-ids.txt").write_text("".join(r["id"] + "\n" for r in chosen["train"][::30]))  # 24 ids
    (root / "few.ids").write_text("".join(r["id"] + "\n" for r in chosen["test"][::20]))  # 3 ids: stitch explain
    images = root / "images"
    for r in chosen["test"][:40]:
        (images / r["label"]).mkdir(parents=True, exist_ok=True)
        (images / r["label"] / Path(r["path"]).name).symlink_to(r["path"])
    # The embed example reads ../shared/data as it would from a clone of the repository.
    (root.parent / "shared").mkdir(exist_ok=True)
    if not (root.parent / "shared" / "data").exists():
        (root.parent / "shared" / "data").symlink_to(data)
    from tests.conftest import iu_reports

    with open(root / "reports.jsonl", "w") as fh:
        for r in iu_reports(data / "iu-xray-reports" / "NLMCXR_reports.tgz")[:40]:
            fh.write(json.dumps({"id": r["id"], "report": r["text"]}) + "\n")

    def run(*args: object) -> None:
        res = run_inprocess(*args)
        assert res.code == 0, f"setting up {args}: {res.stderr}"

    train, test = ([r["id"] for r in chosen[split]] for split in ("train", "test"))
    for model in ("lite0", "lite2"):
        copy_store(base[model], root / f"{model}.h5", ids=train)
        copy_store(base[model], root / f"test-{model}.h5", ids=test)
    links = {"lite0-test.h5": "test-lite0.h5", "other-lite0.h5": "test-lite0.h5",
             "k-test-lite0-tok.h5": "test-lite0.h5", "k-test-lite2.h5": "test-lite2.h5",
             "k-test-lite2-tok.h5": "test-lite2.h5", "nih-lite2.h5": "test-lite2.h5",
             "lite0-tok.h5": "lite0.h5", "lite2-tok.h5": "lite2.h5", "k-train-lite2.h5": "lite2.h5"}
    for name, target in links.items():
        (root / name).symlink_to(root / target)
    # Two shards of one Lite0 run, as `stitch embed --shard i/2` writes them (halves of the rows).
    copy_store(base["lite0"], root / "shard-0.h5", ids=train[: len(train) // 2], tokens=False)
    copy_store(base["lite0"], root / "shard-1.h5", ids=train[len(train) // 2:], tokens=False)
    # Captions of 240 of the train images (the first 120 per class): the head examples train on
    # those pairs, a third of the rows, as fast as the examples' claims need.
    captioned = [r["id"] for r in kermany_rows(data, {"train": 120})]
    copy_store(base["lite2"], root / "captioned-lite2.h5", ids=captioned)
    run("head", "captions", "captioned-lite2.h5", "--from-labels", "pneumonia", "-t", "minilm", "--tokens",
        "-o", "k-train-captions-minilm.h5")
    # Covid-notes-like pairs: the Kermany images with IU report sentences as their notes.
    notes = [json.loads(line)["report"] for line in open(root / "reports.jsonl")]
    with open(root / "covid.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "text"])
        w.writerows((r["id"], r["path"], notes[i % len(notes)])
                    for i, r in enumerate(chosen["train"][:80]))
    run("embed", "covid.csv", "-m", "lite2", "--tokens", "-o", "covid-lite2.h5", "--workers", "0")
    # NIH's training patients, as `stitch demo` writes them (here: half of the Kermany test rows).
    (root / "nih-train-ids.txt").write_text("".join(r["id"] + "\n" for r in chosen["test"][::2]))
    run("fit", "lite0.h5", "k-train-captions-minilm.h5", "-o", "lite0-to-minilm.map")


@pytest.fixture(scope="module")
def world(data: Path, kermany_base: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    old = Path.cwd()
    os.chdir(root)
    try:
        _world(root, data, kermany_base)
    finally:
        os.chdir(old)
    return root


def ran_as_shown(args: list[str], res: Result, fails: bool = False) -> bool:
    """Whether `stitch ARGS` did what its help or page shows.

    A quality gate (``--require``) passes or stops by the data's figures, whatever the page
    shows: stopping is exit 1 and one line, ``error: map not written: …``. Any other exit 1 is a
    failure: an error nobody foresaw exits 1 too (``error: unexpected …``). A command a page
    shows failing must fail with one line, not with an unexpected error.
    """
    lines = res.message_lines
    if "--require" in args:  # whether the page shows it stopping or not: the data decide
        return res.code == 0 or (res.code == 1 and len(lines) == 1 and lines[0].startswith("error: map not written: "))
    if fails:
        unexpected = any(line.startswith("error: unexpected") for line in lines) or "Traceback" in res.stderr
        return res.code != 0 and len(lines) == 1 and not unexpected
    return res.code == 0


def test_only_a_gate_that_stops_counts_as_run() -> None:
    gate = ["fit", "a.h5", "b.h5", "--require", "top1>=0.5"]
    assert ran_as_shown(gate, Result(0, "", ""))
    assert ran_as_shown(gate, Result(1, "", "error: map not written: top1 0.41 < 0.5\n"))
    crash = Result(1, "", "error: unexpected KeyError: 'x' (run with --debug for the traceback)\n")
    assert not ran_as_shown(gate, crash)
    assert not ran_as_shown(gate, Result(2, "", "error: map not written: usage\n"))
    assert not ran_as_shown(["fit", "a.h5"], Result(1, "", "error: map not written: x\n"))
    assert ran_as_shown(gate, Result(0, "", ""), fails=True)  # a page shows it stopping; here it passed
    assert not ran_as_shown(gate, crash, fails=True)
    shown_failing = Result(2, "", "error: no such file a.h5\n")
    assert ran_as_shown(["fit", "a.h5"], shown_failing, fails=True)
    assert not ran_as_shown(["fit", "a.h5"], crash, fails=True)
    assert not ran_as_shown(["fit", "a.h5"], Result(0, "", ""), fails=True)


def _after(path: str, root: Path) -> None:
    """Files later examples name that an earlier command wrote under another name."""
    if path == "head train":
        for name in ("token-head.st", "s0.head", "s1.head", "s2.head", "head.head"):
            shutil.copy(root / "head.st", root / name)
    if path == "results":
        shutil.copy(root / "native.json", root / "classify.json")


@pytest.mark.slow
def test_every_help_example_runs(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(ORDER) >= set(COMMANDS) - {"anchors", "head"}
    monkeypatch.chdir(world)
    ran, failed = [], []
    for path in ORDER:
        for example in examples(path) + EXTRA.get(path, []):
            if example in NOT_RUN:
                continue
            command, _, redirect = example.partition(" > ")
            args = shlex.split(command)
            assert args[0] == "stitch", example
            args = [a for arg in args for a in (sorted(glob.glob(arg)) if "*" in arg and glob.glob(arg) else [arg])]
            if path == "report" and args[2:3] == ["demo-out"]:
                args[2] = str(world)
            res = run_inprocess(*args[1:])
            if redirect and res.code == 0:
                (world / redirect.strip()).write_text(res.stdout)
            (ran if ran_as_shown(args, res) else failed).append((example, res.code, res.stderr.strip()[-400:]))
        _after(path, world)
    assert not failed, "\n".join(f"{e}\n  exit {c}: {err}" for e, c, err in failed)
    assert len(ran) >= 30


def _parses(args: list[str]) -> str:
    """What is wrong with `stitch ARGS` as click reads it (nothing run): "" when it parses with
    no deprecated option, else the usage error or the deprecation line."""
    import contextlib
    import io

    command, ctx, rest = cli, None, list(args)
    while isinstance(command, click.Group) and rest and rest[0] in command.list_commands(click.Context(command)):
        ctx = click.Context(command, info_name=rest[0], parent=ctx)
        command = command.get_command(ctx, rest.pop(0))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            command.make_context(command.name, rest, parent=ctx)
    except click.ClickException as exc:
        return exc.format_message()
    return err.getvalue().strip()


def test_the_group_helps_show_commands_that_parse() -> None:
    """`stitch --help`'s pipeline and the groups' own examples (head, anchors: ORDER runs their
    subcommands' examples, not these) name current options: each line parses as click reads it,
    with no deprecation line."""
    texts = {"stitch": cli.help or "", **{name: _command(name).help or "" for name in ("head", "anchors")}}
    lines = [(where, line.strip()) for where, text in texts.items() for line in text.splitlines()
             if line.strip().startswith("stitch ")]
    assert sum(where == "stitch" for where, _ in lines) >= 7  # the pipeline: embed ... classify
    bad = [(where, line, why) for where, line in lines if (why := _parses(shlex.split(line)[1:]))]
    assert not bad, "\n".join(f"{where} --help: {line}\n  {why}" for where, line, why in bad)
    assert "deprecated" in _parses(["head", "captions", "a.h5", "--from-labels", "pneumonia", "-m", "minilm",
                                    "-o", "c.h5"])  # what the pipeline showed: the check sees it


def test_every_example_is_run_or_explained() -> None:
    every = {e for path in ORDER for e in examples(path)}
    stale = set(NOT_RUN) - every
    assert not stale, f"NOT_RUN names examples no --help shows any more: {stale}"


# -- the commands in docs/ -------------------------------------------------------------------------
DOCS_NOT_RUN = {  # command (as printed, continuations joined, comment dropped) -> why not here
    "stitch fit k-train-$m.h5 k-train-lite2.h5 --method ridge -o $m.map --json > fit-$m.json":
        "the body of a shell loop over backbones (xception among them)",
    "stitch embed $DATA/kermany-pneumonia-224/labels.csv --where split=train -m lite0 -o k-train-lite0.h5":
        "5,216 images: the demo embeds them",
    "stitch embed $DATA/kermany-pneumonia-224/labels.csv --where split=train -m lite2 -o k-train-lite2.h5":
        "5,216 images: the demo embeds them",
    "stitch info k-dino.h5": "a store of a Hugging Face DINOv2 folder (no model hub here)",
    'stitch embed "nih:../shared/data/nih-pneumonia-256?labels=torchxrayvision" -m lite0 -o nih-lite0.h5':
        "1,000 images: the demo embeds them through the same spec",
    "stitch embed $DATA/kermany-pneumonia-224/labels.csv --where split=test -m lite0 -o k-test-lite0.h5":
        "624 images: the demo embeds them",
    "stitch sweep k-train-lite0.h5 k-train-lite2.h5 --n-anchors 500,1000,1230,1280,1330,1600,3000 "
    "--methods affine,linear,orthogonal,ridge --seeds 0 -o sweep-neard.csv":
        "3,000 anchors need the demo's 5,216-image stores",
    "stitch head train k-lite2.h5 k-captions-minilm.h5 -o k-head.st --device cuda":
        "the refusal without a GPU (it would train where one is): tests/test_devices.py checks it",
}
ABSENT = {  # what a docs command needs that this environment lacks, by a substring of the command
    "hf:": "a Hugging Face model folder (no model hub here): tests/test_encoders_hf_vision.py runs local ones",
    "open_clip:": "open_clip weights from a hub",
    "torchvision:resnet18": "a torchvision checkpoint file: tests/test_encoders_torchvision.py",
    "xception": "Xception (make xception) is optional",
    "--engine ray": "Ray: tests/test_engine_ray.py",
    "SLURM": "a SLURM array job",
    "dicoms/": "DICOM inputs: tests/test_inputs_dicom.py",
    "shards/": "WebDataset shards: tests/test_inputs_webdataset.py",
    "kermany-hf/": "a Hugging Face dataset folder: tests/test_inputs_hf.py",
    "kermany.parquet": "a Parquet dataset: tests/test_inputs_hf.py",
    "big.h5": "a large store",
    "stitch demo": "the demo: tests/test_demo.py",
    "demo-out": "the demo's output: tests/test_demo.py",
    "covid-notes-384/labels.csv": "the covid-notes set relative to the data folder; the demo embeds it",
    "k-train1500": "1,500-image token stores of docs/head.md's measurement",
    "fit-*.json": "fit records of a cross-family run",
    "/shared/": "a cluster's shared folder",
    "cxr/": "a user's image folder for other backbones",
    "nih-lite0.h5": "the 1,000 NIH images embedded with every finding (docs/benchmark.md's run)",
    ":/data/": "a dataset as published at a placeholder folder: tests/test_cxr_*.py read each published layout",
    "stitch neighbours": "docs/add-a-command.md's worked example of a command to add, not a command",
    "mimic-lite2.h5": "a MIMIC-CXR-JPG store (a credentialed dataset): tests/test_cxr_mimic.py embeds a tree in its layout",
}


def docs_commands() -> list[tuple[str, str, bool]]:
    """(doc file, command, whether the doc shows it failing) for every `stitch` line in docs/."""
    out = []
    for doc in sorted((Path(__file__).resolve().parents[1] / "docs").glob("*.md")):
        text = doc.read_text(encoding="utf-8")
        for block in text.split("```")[1::2]:
            lines = block.replace("\\\n", " ").splitlines()
            for i, line in enumerate(lines):
                command = line.removeprefix("$ ").split("  #")[0].strip()
                if not command.startswith("stitch "):
                    continue
                fails = i + 1 < len(lines) and lines[i + 1].startswith("error:")
                out.append((doc.name, " ".join(command.split()), fails))
    return out


def _absent(command: str) -> str | None:
    return next((why for key, why in ABSENT.items() if key in command), DOCS_NOT_RUN.get(command))


@pytest.mark.slow
def test_every_docs_command_runs_or_is_explained(world: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stitchkit.encoders import packaged

    monkeypatch.chdir(world)
    monkeypatch.setenv("W", str(packaged.lite_weights("0")))
    monkeypatch.setenv("DATA", str(data))
    for name, target in {"lite2-sub.h5": "lite2.h5", "k-lite2.h5": "lite2.h5", "k-test.csv": "test.csv",
                         "k-train-lite0.h5": "lite0.h5", "covid-lite2-tok.h5": "covid-lite2.h5",
                         "c-lite2.h5": "covid-lite2.h5"}.items():
        if not (world / name).exists():
            (world / name).symlink_to(world / target)
    # docs/head.md's token steps (a 10-epoch token head, a --tokens map) on the 120 train images
    # of the session's stores: the same commands, a sixth of the pairs.
    train = [r["id"] for r in kermany_rows(data, PER_CLASS) if r["id"].startswith("train/")]
    for name, source in {"k-train-lite0-tok.h5": "lite0.h5", "k-train-lite2-tok.h5": "lite2.h5",
                         "k-captions-minilm-tok.h5": "k-train-captions-minilm.h5"}.items():
        if not (world / name).exists():
            copy_store(world / source, world / name, ids=train)
    with EmbeddingStore(world / "k-lite2.h5") as s:  # docs/cli.md splits k-lite2.h5 by id files
        ids = list(s.ids)
    (world / "k-train.ids").write_text("\n".join(ids[::2]) + "\n")
    (world / "k-test.ids").write_text("\n".join(ids[1::2]) + "\n")
    shutil.copy(world / "head.st", world / "k-token.head")  # what docs/head.md's 1,500-image step writes
    ran, failed = [], []
    for doc, command, fails in docs_commands():
        if _absent(command):
            continue
        line, _, redirect = os.path.expandvars(command).partition(" > ")
        args = shlex.split(line)
        args = [a for arg in args for a in (sorted(glob.glob(arg)) if "*" in arg and glob.glob(arg) else [arg])]
        out = args[args.index("-o") + 1] if "-o" in args else None
        if out and args[1] in ("embed", "export", "import", "fit") and (world / out).exists():
            args.append("--overwrite")  # the docs' folders start empty; this one has run the examples
        res = run_inprocess(*args[1:])
        if redirect and res.code == 0:
            (world / redirect.strip()).write_text(res.stdout)
        (ran if ran_as_shown(args, res, fails) else failed).append((doc, command, res.code, res.stderr.strip()[-300:]))
    assert not failed, "\n".join(f"{d}: {c}\n  exit {code}: {err}" for d, c, code, err in failed)
    assert len(ran) >= 25, len(ran)
