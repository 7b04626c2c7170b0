"""`stitch embed --engine ray`: the embedding job as a Ray Data pipeline.

The job is the local engine's job (``stitchkit.embed``): the same numbered batches fixed by the
input list, the same ``OUT.parts/part-NNNNNN.h5`` files, the same ``run.json`` fingerprint and
the same assembly of the final store. Only the execution differs:

* one Ray row per batch index ``k`` that is not finished yet (its positions and file paths);
* decoding + preprocessing in stateless Ray tasks (``Dataset.map``), many at a time;
* the model in an actor pool (``map_batches`` with a callable class), loaded once per actor
  from the spec string: one actor per GPU, or one per group of CPUs;
* the driver writes each part file as its row streams back (``iter_rows``), so every finished
  batch is on disk before the next is awaited, and a re-run after a crash skips it.

Because the batches are the local engine's batches, a Ray run and a local run give the same
values (bit-identical here with the same torch thread count; ~1e-6 apart with another count,
from the order of float sums) and either engine can resume the other's run.
Ray is optional: ``pip install 'stitchkit[ray]'``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import pickle
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ..embed import EmbedResult, plan_job
from ..embed_options import EmbedOptions, EncoderOptions, RayOptions
from ..encoders import EncodeOutput, Encoder, load_encoder
from ..errors import InputFailure, StitchError, UsageError
from ..inputs import Inputs, load_image
from ..inputs.registry import require

RAY_MISSING = "--engine ray needs Ray: pip install 'stitchkit[ray]'"

# Each decode task asks Ray for this share of a CPU. Decoding + resizing a Kermany image costs
# about 2 % of a Lite0 forward pass (FINDINGS.md: 2,844 vs 60 img/s per core), so a small
# logical share is honest, and it keeps CPU-only clusters from handing every CPU to the model
# actors and leaving none for decoding (Ray Data then waits forever).
DECODE_CPUS = 0.2


def require_ray() -> ModuleType:
    """Import Ray, or fail with the one line that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate extra of Ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class ActorPlan:
    """How the model actors are placed: how many, on what, and with how many torch threads."""

    actors: int
    device: str  # "cpu" | "cuda"
    num_cpus: float
    num_gpus: float
    threads: int
    decode_cpus: float = DECODE_CPUS


def plan_actors(resources: list[dict[str, float]], actors: int | None, device: str) -> ActorPlan:
    """Place the model actors on a cluster given each alive node's resources.

    GPU: one actor per GPU by default, each with one GPU and one CPU (several actors share a GPU
    when ``actors`` exceeds the GPUs). CPU: one actor per node by default; each node keeps a small
    reserve for decoding and the rest is cut into equal groups, the largest group size at which
    ``actors`` groups fit on the nodes, because an actor cannot span machines.
    """
    if actors is not None and actors < 1:
        raise UsageError("actors (--actors) must be at least 1")
    gpus = sum(r.get("GPU", 0.0) for r in resources)
    if device == "cuda" or (device == "auto" and gpus >= 1):
        if gpus < 1:
            raise UsageError("--device cuda but the Ray cluster has no GPU: use --device cpu or auto")
        n = actors or int(gpus)
        return ActorPlan(n, "cuda", num_cpus=1.0, num_gpus=min(1.0, gpus / n), threads=1)
    free = [r["CPU"] - max(DECODE_CPUS, 0.02 * r["CPU"]) for r in resources if r.get("CPU", 0) >= 1]
    if not free:
        raise UsageError("the Ray cluster has no node with a whole CPU: start it with --num-cpus")
    n = actors or len(free)
    # Largest group size g with sum(floor(free_i / g)) >= n: try each node cut into j groups.
    sizes = sorted({f / j for f in free for j in range(1, n + 1)}, reverse=True)
    per_actor = next((g for g in sizes if sum(int(f / g + 1e-9) for f in free) >= n), 0.0)
    if per_actor < 0.1:
        raise UsageError(f"--actors {n} is too many for {sum(free):g} free CPUs: use fewer actors")
    per_actor = int(per_actor * 100) / 100  # round down so the groups still fit after rounding
    return ActorPlan(n, "cpu", num_cpus=per_actor, num_gpus=0.0, threads=max(1, int(per_actor + 0.5)))


def _prepare_only(encoder: Encoder) -> Encoder:
    """A copy of ``encoder`` without its networks: what decode tasks need (transform, mode).

    Shipping the full encoder to every decode task would copy the weights into each one; the
    preprocessing objects are small and pickle cleanly.
    """
    light = copy.copy(encoder)
    for name, value in list(vars(light).items()):
        if isinstance(value, torch.nn.Module):
            setattr(light, name, None)
    return light


def _decode_row(row: dict[str, Any], preparer: Encoder) -> dict[str, Any]:
    """Ray task: batch k's inputs -> (positions ok, collated batch or None, failures), pickled.

    The payload is pickled because a row carries ragged lists (the failures, text batches) whose
    Arrow types would differ from row to row; one binary column keeps the schema fixed.
    """
    if torch.get_num_threads() != 1:
        # Like a DataLoader worker: the per-image ops are tiny, and a thread pool per decode
        # task only spins against the model actors (3x the decode cost measured on 2 cores).
        torch.set_num_threads(1)
    prepared, ok, failed = [], [], []
    for pos, ref in zip(row["positions"], row["refs"], strict=True):
        try:
            raw = load_image(Path(ref)) if preparer.modality == "image" else ref
            prepared.append(preparer.prepare(raw))
            ok.append(int(pos))
        except InputFailure as exc:
            failed.append((int(pos), str(exc)))
        except Exception as exc:  # noqa: BLE001 - one bad input must not stop the job
            failed.append((int(pos), f"{type(exc).__name__}: {exc}"))
    batch = preparer.collate(prepared) if prepared else None
    if isinstance(batch, torch.Tensor):
        batch = batch.numpy()  # plain bytes on the wire; no torch shared-memory handles
    return {"k": row["k"], "payload": pickle.dumps((ok, batch, failed), protocol=5)}


class EncoderActor:
    """Ray actor: the encoder loaded once from its spec, run on each decoded batch."""

    def __init__(self, spec: str, device: str, dtype: str, tokens: bool, threads: int) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # actors never fetch weights at run time
        torch.set_num_threads(threads)  # Ray's OMP_NUM_THREADS rounds fractional CPUs down to 1
        self.encoder = load_encoder(spec, device=device, dtype=dtype)
        self.tokens = tokens
        # Each node loads its own copy of the weights: report their hash so the driver can
        # refuse a store whose provenance would name other weights than the ones used.
        self.sha = self.encoder.weights_sha256()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for payload in batch["payload"]:
            ok, x, failed = pickle.loads(payload)
            result = None
            if x is not None:
                with torch.inference_mode():
                    r = self.encoder.encode(torch.from_numpy(x) if isinstance(x, np.ndarray) else x,
                                            tokens=self.tokens)
                result = EncodeOutput(
                    r.embeddings.float().cpu(),
                    None if r.tokens is None else r.tokens.cpu(),
                    None if r.mask is None else r.mask.cpu(),
                )
            out.append(pickle.dumps((ok, result, failed, self.sha), protocol=5))
        return {"k": batch["k"], "payload": np.array(out, dtype=object)}


@contextlib.contextmanager
def ray_session(ray: ModuleType, address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Join the cluster at ``address``, or start a local Ray; shut down only what we started."""
    if ray.is_initialized():  # the caller's own session (a notebook, a test): leave it running
        yield
        return
    # Ray's INFO/WARNING chatter (session paths, auth token notices) would bury the CLI's own
    # lines; worker exceptions still reach the driver as errors.
    quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    environment = dict(os.environ)
    try:
        if address:
            if num_cpus is not None:
                raise UsageError("ray_cpus (--ray-cpus) applies to a local Ray only: drop it with --address")
            if not _answers(address):
                # ray.init retries an unreachable GCS for minutes; one TCP connect says it now.
                raise ConnectionError("nothing answers there")
            _token_mode_like_ray_start()
            ray.init(address=address, **quiet)
        else:
            # address="local" so that a RAY_ADDRESS in the environment does not silently send
            # the job to some other cluster: joining one is what --address is for.
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **quiet)
    except (ConnectionError, TimeoutError) as exc:
        _restore_environment(environment)
        raise _no_cluster(address, str(exc)) from None
    try:
        yield
    finally:
        ray.shutdown()
        _restore_environment(environment)


def _restore_environment(environment: dict[str, str]) -> None:
    """Undo what ``ray.init`` put in this process's environment (PYTHONBREAKPOINT, RAY_AUTH_MODE,
    RAY_USAGE_STATS_ENABLED): a caller in Python finds its environment as it left it."""
    for key in set(os.environ) - set(environment):
        del os.environ[key]
    os.environ.update(environment)


def _token_mode_like_ray_start() -> None:
    """Send the auth token when joining, as `ray start` enables token auth when one exists.

    `ray start --head` turns token auth on when ~/.ray/auth_token (or RAY_AUTH_TOKEN...) exists
    and RAY_AUTH_MODE is unset, but a driver joining that cluster sends its token only in token
    mode, so it is refused (checked with Ray 2.60). Ray's own helper applies the same rule and
    refreshes its already-loaded config; setting the variable alone is read too late.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication import authentication_token_setup as auth
    except ImportError:  # another Ray version: its own rules apply
        return
    with contextlib.suppress(Exception):  # a private helper: never fail the run because of it
        auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _no_cluster(address: str | None, why: str) -> StitchError:
    return StitchError(
        f"could not join the Ray cluster at {address}: {why} (start one with `ray start --head` "
        "and pass the address it prints; with token auth, set RAY_AUTH_TOKEN or "
        "RAY_AUTH_TOKEN_PATH to the cluster's token)"
    )


def _answers(address: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to a host:port address opens; other forms (auto, ray://) pass."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return True
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError:
        return False
    return True


def embed_store_ray(inputs: Inputs, model_spec: str, out: str | Path, options: EmbedOptions | None = None,
                    encoder_options: EncoderOptions | None = None, ray_options: RayOptions | None = None
                    ) -> EmbedResult:
    """Embed ``inputs`` into ``out`` with Ray; same store, provenance and resume as ``embed_store``.

    ``encoder_options``: the actors' device (``cuda``: a GPU of the cluster each) and dtype; the
    runtime is torch's. ``ray_options``: the cluster, or a local Ray's CPUs, and the replicas."""
    options, ray_options = options or EmbedOptions(), ray_options or RayOptions()
    encoder_options = encoder_options or EncoderOptions()
    device, dtype, tokens = encoder_options.device, encoder_options.dtype, options.tokens
    address, actors = ray_options.address, ray_options.actors
    ray = require_ray()  # before any model loading: a missing extra is the first thing to say
    # Decode tasks read files by path: formats whose samples live in containers declare ray=False.
    require(inputs, "ray", "--engine ray reads image files and manifests; {kind} input needs --engine local")
    t0 = time.perf_counter()
    out = Path(out)
    if address and not _answers(address):  # say so before minutes of model loading
        raise _no_cluster(address, "nothing answers there")
    # The driver's copy gives provenance (spec, weight hash, preprocessing) and the decode
    # tasks' preprocessing; it stays on the CPU so the head node needs no accelerator.
    encoder = load_encoder(model_spec, device="cpu", dtype=dtype)
    job = plan_job(inputs, encoder, out, options, t0)
    if isinstance(job, EmbedResult):
        return job
    items, batches = job.items, job.batches
    with job.run() as todo:
        if todo:
            refs = [str(it.path) if encoder.modality == "image" else (it.text or "") for it in items]
            rows = [{"k": k, "positions": batches[k].tolist(), "refs": [refs[p] for p in batches[k]]}
                    for k in todo]
            with ray_session(ray, address, ray_options.ray_cpus):
                for k, ok, result, failed, sha in _run_pipeline(
                    ray, rows, _prepare_only(encoder), model_spec, dtype, tokens, actors, device
                ):
                    if sha != job.fingerprint["weights_sha256"]:
                        raise StitchError(
                            f"a Ray worker loaded other weights for {model_spec!r} (sha256 {sha[:12]}… "
                            f"vs {job.fingerprint['weights_sha256'][:12]}… here): install the same "
                            "model packages on every node"
                        )
                    job.report_failures(failed)
                    job.save(k, ok, result, failed)
    return job.result()


def _run_pipeline(
    ray: ModuleType,
    rows: list[dict[str, Any]],
    preparer: Encoder,
    model_spec: str,
    dtype: str,
    tokens: bool,
    actors: int | None,
    device: str,
) -> Iterator[tuple[int, list[int], EncodeOutput | None, list[tuple[int, str]], str]]:
    """Stream (k, positions ok, encoder output, failures, weights hash) as batches finish."""
    alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    plan = plan_actors(alive, actors, device)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws its own bar from the part files written
    ctx.execution_options.preserve_order = False  # write whichever batch finishes first; order is restored at assembly
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # e.g. "progress bars disabled"
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))  # one block per batch index
    ds = ds.map(_decode_row, fn_kwargs={"preparer": preparer}, num_cpus=plan.decode_cpus)
    ds = ds.map_batches(
        EncoderActor,
        fn_constructor_kwargs={"spec": model_spec, "device": plan.device, "dtype": dtype,
                               "tokens": tokens, "threads": plan.threads},
        batch_size=1,  # one Ray batch = one of our batches, so part files match the local engine's
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus or None,
    )
    rows_out = iter(ds.iter_rows())
    while True:
        try:
            row = next(rows_out)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a worker's failure arrives wrapped by Ray
            raise _unwrap(exc) from None
        ok, result, failed, sha = pickle.loads(row["payload"])
        yield int(row["k"]), ok, result, failed, sha


def _unwrap(exc: BaseException) -> StitchError:
    """A worker's StitchError (e.g. a node without the model package) as itself; else one line.

    Ray wraps a remote exception in RayTaskError / UserCodeException; the cause sits in
    ``__cause__`` or ``.cause``.
    """
    from .. import errors

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        # Ray's RayTaskError(ModelError) hybrids are instances of the cause's class too; the
        # module check keeps the original exception, whose message is the one line we want.
        if isinstance(cur, StitchError) and type(cur).__module__.startswith("stitchkit"):
            return cur
        # An actor that failed in __init__ (ActorDiedError) keeps only the remote traceback text.
        text = f"{cur}\n{getattr(cur, 'error_msg', '')}"
        found = re.search(r"stitchkit\.errors\.(\w+): (.+)", text)
        cls = getattr(errors, found.group(1), None) if found else None
        if found and isinstance(cls, type) and issubclass(cls, StitchError):
            return cls(found.group(2).strip())
        cur = getattr(cur, "cause", None) or cur.__cause__
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return StitchError(f"the Ray pipeline failed: {type(exc).__name__}: {first}")
