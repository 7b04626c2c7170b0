"""Safety: nothing unsafe is loaded, nothing escapes --root, HDF5 strings from any writer decode.

The source scan walks the AST of every module under stitchkit/ and cli/ (comments and
strings do not count). What it refuses, and why:

* ``pickle`` / ``cPickle`` / ``dill`` / ``joblib.load``: unpickling runs arbitrary code.
* ``torch.load(...)`` without ``weights_only=True``: the same, through torch's pickle.
* ``trust_remote_code=True`` written as a literal: remote code must be asked for per spec.
* ``allow_pickle=True``; ``yaml.load`` / ``yaml.unsafe_load`` / ``yaml.full_load``
  (``yaml.safe_load`` only); the builtins ``eval`` and ``exec``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from stitchkit.errors import UsageError
from stitchkit.inputs import read_inputs
from stitchkit.store import EmbeddingStore

# tests/faults is a package of helpers beside this file; pytest puts tests/ on the path only
# when it collects that package, so say it here for runs of this file alone.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from faults.helpers import run_inprocess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "stitchkit").rglob("*.py"), *(ROOT / "cli").rglob("*.py")])

# Modules allowed to use pickle, each with the reason; the report lists them for review.
PICKLE_ALLOWED = {
    # Ray tasks of one job pass batches to each other in memory; Ray itself serialises every
    # object with (cloud)pickle, and nothing read from a file or the network is unpickled.
    "stitchkit/engines/ray_engine.py",
}
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal"}


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_uses(path: Path, rel: str | None = None) -> list[str]:
    """Every unsafe use in one source file, as 'file:line: what'."""
    rel = rel or path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
    found = []

    def bad(node: ast.AST, what: str) -> None:
        found.append(f"{rel}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                if name.split(".")[0] in UNSAFE_MODULES and rel not in PICKLE_ALLOWED:
                    bad(node, f"imports {name}")
    for call in _calls(tree):
        name = _dotted(call.func)
        if name.endswith("torch.load"):
            if not _is_true(_keyword(call, "weights_only")):
                bad(call, "torch.load without weights_only=True")
        if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            bad(call, f"{name}: use yaml.safe_load")
        if name in ("eval", "exec"):
            bad(call, f"builtin {name}")
        if name.endswith("joblib.load") or name.endswith("read_pickle"):
            bad(call, name)
        if _is_true(_keyword(call, "trust_remote_code")):
            bad(call, "trust_remote_code=True literal")
        if _is_true(_keyword(call, "allow_pickle")):
            bad(call, "allow_pickle=True")
    return found


def test_the_scan_finds_what_it_should(tmp_path: Path) -> None:
    """The scanner itself: each forbidden form is caught, the safe forms are not."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nimport torch, yaml, numpy as np\n"
        "torch.load('w.pt')\ntorch.load('w.pt', weights_only=False)\n"
        "torch.load('w.pt', weights_only=True)\nyaml.load(s)\nyaml.safe_load(s)\n"
        "f(trust_remote_code=True)\nf(trust_remote_code=flag)\nnp.load(p, allow_pickle=True)\n"
        "eval('1')\nmodel.eval()\n"
    )
    found = unsafe_uses(sample, "sample.py")
    lines = sorted(int(f.split(":")[1]) for f in found)
    assert lines == [1, 3, 4, 6, 8, 10, 11], found


def test_no_unsafe_loading_in_the_sources() -> None:
    assert len(SOURCES) > 40
    found = [f for path in SOURCES for f in unsafe_uses(path)]
    assert not found, "\n".join(found)


def test_trust_remote_code_is_off_unless_the_spec_asks() -> None:
    from stitchkit.encoders.hf_loading import trust_remote_code as _trust
    from stitchkit.encoders.registry import parse_spec

    assert not _trust(parse_spec("hf:/models/x")[0])
    assert not _trust(parse_spec("st:/models/x")[0])
    assert not _trust(parse_spec("hf:/models/x?trust_remote_code=0")[0])
    assert _trust(parse_spec("hf:/models/x?trust_remote_code=1")[0])


def test_torch_weights_that_need_pickle_are_refused(tmp_path: Path) -> None:
    """A .pth holding an arbitrary object is refused by weights_only=True, with one line."""
    import torch

    from stitchkit.encoders.weights import read_state_dict
    from stitchkit.errors import ModelError

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": Path("/etc/passwd")}, evil)  # a non-tensor object: needs pickle
    with pytest.raises(ModelError, match="weights_only=True"):
        read_state_dict(evil)


# -- --root confinement ------------------------------------------------------------------------
def _manifest(path: Path, rel: str) -> Path:
    path.write_text(f"id,path\na,{rel}\n")
    return path


@pytest.mark.parametrize("rel", ["../../etc/passwd", "/etc/passwd", "sub/../../outside.png", "link.png"])
def test_manifest_paths_cannot_escape_root(tmp_path: Path, rel: str) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(b"x")
    (root / "link.png").symlink_to(tmp_path / "outside.png")  # a link out of the root
    manifest = _manifest(tmp_path / "m.csv", rel)
    with pytest.raises(UsageError, match="escapes --root"):
        read_inputs(manifest, root=root)
    res = run_inprocess("embed", manifest, "--root", root, "-m", "lite0", "-o", tmp_path / "o.h5")
    assert res.code == 2 and "escapes --root" in res.stderr
    assert len(res.message_lines) == 1 and "Traceback" not in res.stderr
    assert not (tmp_path / "o.h5").exists()


def test_paths_inside_root_are_kept(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    inputs = read_inputs(_manifest(tmp_path / "m.csv", "sub/./a.png"), root=root)
    assert inputs.items[0].path == (root / "sub" / "a.png").resolve()


# -- HDF5 strings as other tools write them ----------------------------------------------------
STRING_KINDS = {
    "fixed-length bytes": lambda v: np.array([s.encode() for s in v], dtype="S"),
    "variable-length bytes": lambda v: np.array([s.encode() for s in v], dtype=h5py.string_dtype("ascii")),
    "variable-length utf-8": lambda v: np.array(v, dtype=h5py.string_dtype("utf-8")),
}


@pytest.mark.parametrize("kind", list(STRING_KINDS))
def test_hdf5_strings_from_other_writers_decode(tmp_path: Path, kind: str) -> None:
    ids = ["a", "train/NORMAL/x.png", "id with spaces"]
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as h5:
        h5["embeddings"] = np.eye(3, dtype=np.float32)
        h5.create_dataset("ids", data=STRING_KINDS[kind](ids))
        h5.create_dataset("labels", data=STRING_KINDS[kind](["n", "p", "n"]))
        h5.attrs["model_spec"] = np.bytes_(b"lite0")  # attributes as bytes too
    with EmbeddingStore(path) as store:
        assert list(store.ids) == ids and all(type(i) is str for i in store.ids)
        assert list(store.labels) == ["n", "p", "n"]
        assert store.model_spec == "lite0"
        assert list(store.index_of(["id with spaces", "a"])) == [2, 0]


def test_invalid_utf8_in_hdf5_strings_is_replaced_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "latin1.h5"
    with h5py.File(path, "w") as h5:
        h5["embeddings"] = np.eye(2, dtype=np.float32)
        h5.create_dataset("ids", data=np.array([b"caf\xe9", b"ok"], dtype="S"))
        h5.attrs["model_spec"] = np.bytes_(b"\xff\xfe")
    with EmbeddingStore(path) as store:
        assert list(store.ids) == ["caf\ufffd", "ok"]
        assert isinstance(store.model_spec, str)
    res = run_inprocess("info", path, "--json")
    assert res.code == 0 and "Traceback" not in res.stderr
