"""The input-format registry: one module per format, one line to add one, capabilities as flags.

``python -m tests.test_inputs_registry --write`` rewrites the capability table in docs/inputs.md
from the registry; the test only ever compares.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import re
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stitchkit.errors import UsageError
from stitchkit.inputs import (
    InputFormat,
    InputOptions,
    Inputs,
    Item,
    formats,
    input_format,
    read_inputs,
    register,
    registry,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults.helpers import run_inprocess  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "inputs.md"
TABLE = re.compile(r"(<!-- input formats: generated[^\n]*-->\n)(.*?)(<!-- end input formats -->)", re.S)
RAY_REFUSAL = "error: --engine ray reads image files and manifests; {kind} input needs --engine local"
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray[data]")


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Formats registered in a test are gone after it."""
    monkeypatch.setattr(registry, "_EXTRA", [])


def _read_toy(sources: list[str], options: InputOptions) -> Inputs:
    lines = Path(sources[0]).read_text().splitlines()
    return Inputs([Item(str(n), text=t) for n, t in enumerate(lines, 1)], "text", sources[0], ["text"])


def toy(**fields: object) -> InputFormat:
    """A format of ``.toy`` files: one text per line (what a dataset reader's entry looks like)."""
    base: dict[str, object] = {"name": "toy", "description": "toy files, one text per line", "noun": "toy files",
                               "claim": lambda s: len(s) == 1 and s[0].endswith(".toy"), "read": _read_toy}
    return InputFormat(**{**base, **fields})


def _png_tar(path: Path) -> Path:
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png, format="PNG")
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("a.png")
        info.size = len(png.getvalue())
        tf.addfile(info, io.BytesIO(png.getvalue()))
    return path


def test_every_registered_format_is_a_module_with_its_flags() -> None:
    assert len(registry.FORMATS) == len(set(registry.FORMATS))
    for module in registry.FORMATS:
        fmt = importlib.import_module(f"stitchkit.inputs.{module}").FORMAT
        assert isinstance(fmt, InputFormat) and fmt.name == module.rpartition(".")[2]  # its module is its home
        assert fmt.description and "\n" not in fmt.description and fmt.noun
        assert all(isinstance(getattr(fmt, c), bool) for c in registry.CAPABILITIES)
        assert set(fmt.options) <= set(registry.OPTIONS)
        assert (fmt.fetch is None) == (not fmt.containers)
    assert [f.name for f in formats()] == [m.rpartition(".")[2] for m in registry.FORMATS]
    # what the rest of the library asks for
    assert input_format("webdataset").shards and not input_format("hf").ray and input_format("folder").ray
    assert registry.for_container("tar").name == "webdataset"
    assert registry.for_container("parquet").name == registry.for_container("arrow").name == "hf"


def test_each_source_is_claimed_by_its_format(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name in ("m.csv", "m.jsonl", "t.txt", "d.parquet", "x.tar", "y.tar"):
        (tmp_path / name).write_bytes(b"")
    claimed = {name: registry.resolve([str(tmp_path / name)]).name
               for name in ("images", "m.csv", "m.jsonl", "t.txt", "d.parquet", "x.tar")}
    assert claimed == {"images": "folder", "m.csv": "manifest", "m.jsonl": "manifest", "t.txt": "textfile",
                       "d.parquet": "hf", "x.tar": "webdataset"}
    assert registry.resolve([str(tmp_path / "x.tar"), str(tmp_path / "y.tar")]).name == "webdataset"
    assert registry.resolve([str(tmp_path / "{x,y}.tar")]).name == "webdataset"
    with pytest.raises(UsageError, match="does not exist: give an image folder"):
        registry.resolve([str(tmp_path / "nope.csv")])
    with pytest.raises(UsageError, match="unknown kind '.bin'"):
        (tmp_path / "a.bin").write_bytes(b"")
        registry.resolve([str(tmp_path / "a.bin")])
    with pytest.raises(UsageError, match="2 inputs given: several inputs must all be .tar shards"):
        registry.resolve([str(tmp_path / "m.csv"), str(tmp_path / "t.txt")])


def test_a_format_registered_in_one_line_is_claimed(isolated: None, tmp_path: Path) -> None:
    (tmp_path / "a.toy").write_text("first\nsecond\n")
    register(toy())
    inputs = read_inputs(tmp_path / "a.toy")
    assert inputs.kind == "toy" and [it.text for it in inputs.items] == ["first", "second"]
    assert formats()[0].name == "toy"  # registered formats claim first
    with pytest.raises(ValueError, match="already registered"):
        register(toy())


def test_a_scheme_format_gets_the_spec_without_its_scheme(isolated: None, tmp_path: Path) -> None:
    # The hook for dataset readers: `nih:/data/nih` goes to the format whose scheme is nih.
    (tmp_path / "a.txt").write_text("one\n")
    register(toy(name="toyset", scheme="toyset", claim=None))
    inputs = read_inputs(f"toyset:{tmp_path / 'a.txt'}")
    assert inputs.kind == "toyset" and inputs.source == str(tmp_path / "a.txt")
    assert read_inputs(tmp_path / "a.txt").kind == "textfile"  # without the scheme: a text file
    assert registry.resolve(["toyset:/data/x.tar"]).name == "toyset"  # not the shards' claim


def test_option_refusals_come_from_the_registry(isolated: None, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(UsageError, match=r"^--label-from applies to WebDataset \.tar shards only$"):
        read_inputs(tmp_path / "images", label_from="cls")
    with pytest.raises(UsageError, match=r"^--label-from applies to WebDataset \.tar shards only$"):
        read_inputs(tmp_path / "nope.csv", label_from="cls")  # before "does not exist", as always
    # A format that takes the option is named by the refusal, and is not refused.
    (tmp_path / "a.toy").write_text("x\n")
    register(toy(options=("label_from",)))
    assert read_inputs(tmp_path / "a.toy", label_from="cls").kind == "toy"
    with pytest.raises(UsageError, match=r"^--label-from applies to toy files and WebDataset \.tar shards only$"):
        read_inputs(tmp_path / "images", label_from="cls")
    with pytest.raises(ValueError, match="unknown options"):
        toy(options=("colour",))


def test_the_embedding_job_asks_the_captions_flag(isolated: None, tmp_path: Path) -> None:
    # Images with texts beside them: a text model embeds the texts only where the format says so.
    from stitchkit.embed import plan_job
    from stitchkit.embed_options import EmbedOptions

    class TextModel:
        modality = "text"

        class spec:  # noqa: N801 - stands in for a ModelSpec
            text = "a text model"

    items = [Item("a", path=tmp_path / "a.png", text="a caption")]
    for captions, expected in ((False, "the input holds images"), (True, "holds no samples")):
        register(InputFormat(f"pairs{int(captions)}", "image-text pairs", "pairs", captions=captions))
        inputs = Inputs(items, "image", "x", ["text"], kind=f"pairs{int(captions)}")
        with pytest.raises(UsageError, match=re.escape(expected)):  # an empty shard: stop right after the check
            plan_job(inputs, TextModel(), tmp_path / "o.h5", EmbedOptions(shard=(1, 2)), t0=0.0)


@needs_ray
def test_ray_refuses_what_its_flag_says_in_one_line(isolated: None, tmp_path: Path) -> None:
    tar = _png_tar(tmp_path / "x.tar")
    res = run_inprocess("embed", tar, "-m", "lite0", "-o", tmp_path / "o.h5", "--engine", "ray")
    assert res.code == 2 and res.message_lines == [RAY_REFUSAL.format(kind="webdataset")], res.stderr
    # The refusal follows the flag, not a list of names: a new format without ray=True gets it too.
    (tmp_path / "a.toy").write_text("x\n")
    register(toy())
    res = run_inprocess("embed", tmp_path / "a.toy", "-m", "minilm", "-o", tmp_path / "o.h5", "--engine", "ray")
    assert res.code == 2 and res.message_lines == [RAY_REFUSAL.format(kind="toy")], res.stderr
    assert not (tmp_path / "o.h5").exists()


def test_docs_table_equals_the_registry() -> None:
    found = TABLE.search(DOC.read_text(encoding="utf-8"))
    assert found, "docs/inputs.md has no generated input-format table"
    assert found.group(2) == registry.format_table(), (
        "docs/inputs.md's input-format table disagrees with stitchkit.inputs.registry; regenerate with "
        "python -m tests.test_inputs_registry --write")


def write_docs_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    DOC.write_text(TABLE.sub(lambda m: m.group(1) + registry.format_table() + m.group(3), text), encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write_docs_table()
    else:
        sys.exit("usage: python -m tests.test_inputs_registry --write")


def test_embed_ids_keeps_the_listed_inputs_and_refuses_an_unknown_id(data: Path, tmp_path: Path) -> None:
    """`stitch embed --ids`: the inputs' own order, only the listed ids; an id no input has is
    refused in one line before a model is loaded, and nothing is written."""
    from stitchkit.inputs import read_inputs

    labels = data / "kermany-pneumonia-224" / "labels.csv"
    inputs = read_inputs([str(labels)])
    wanted = [inputs.items[5].id, inputs.items[2].id]
    kept = inputs.only(wanted, "ids.txt")
    assert [item.id for item in kept.items] == [inputs.items[2].id, inputs.items[5].id]
    assert kept.source == inputs.source and len(inputs.items) > 5000
    (tmp_path / "ids.txt").write_text(f"# anchors\n{wanted[0]}\nno/such/image.jpeg\n")
    res = run_inprocess("embed", str(labels), "--ids", str(tmp_path / "ids.txt"), "-m", "lite0",
                        "-o", str(tmp_path / "o.h5"))
    assert res.code == 2 and res.message_lines == [res.message_lines[0]]
    assert "1 of its 2 ids are not inputs" in res.stderr and "'no/such/image.jpeg'" in res.stderr
    assert not (tmp_path / "o.h5").exists()
