"""Checkpoints: atomic writes, safe loads, random-number-generator state.

A checkpoint is a dict of tensors and plain values, read back with
``torch.load(weights_only=True)``: loading one never runs code. Files are written atomically
(temporary file in the same folder, flush, fsync, rename, fsync of the folder), so a crash or a
SIGKILL at any moment leaves either the previous file or the new one, never half of one.

Two files per run: ``last.pt`` (everything needed to continue exactly: model, optimizer,
scheduler, EMA, gradient scaler, step, epoch, batch within the epoch, RNG states, history) and
``best.pt`` (the weights that scored best on the validation split, with their config).

A run folder belongs to one run, and to one process at a time: :func:`lock_run_folder` takes an
OS lock (``flock``) on ``DIR/.lock`` that ends with the process, however it ends, and
:func:`remove_stale_temporaries` clears what a killed process's atomic writes left behind.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

FORMAT = "cnnzoo-checkpoint/1"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file_object)`` on a temporary file, then atomically move it to ``path``.

    The file gets the permissions of any new file (``0o666`` less the umask), not the
    ``0o600`` of a temporary file.
    """
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():  # mkdir would only say "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path.parent))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


# A temporary file of :func:`atomic_write` (``tempfile.mkstemp``: eight random characters).
_TEMPORARY = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files that atomic writes interrupted by a kill left in ``folder``
    (``.last.pt.XXXXXXXX.tmp``...); return their names. Call it holding the folder's lock."""
    removed = []
    for p in sorted(Path(folder).iterdir()):
        if _TEMPORARY.fullmatch(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    atomic_write_text(json.dumps(obj, indent=2, default=str) + "\n", path)


# --------------------------------------------------------------------------------------------
# One process per run folder.

LOCK_FILE = ".lock"


def is_bookkeeping(name: str) -> bool:
    """Whether a file of a run folder is the lock or an interrupted write's temporary file: what a
    run that died before writing anything leaves, so the folder still counts as empty."""
    return name == LOCK_FILE or bool(_TEMPORARY.fullmatch(name))


def lock_run_folder(folder: str | os.PathLike) -> IO[str]:
    """Lock the existing run folder ``folder`` for this process; return the open lock file.

    The lock (``flock`` on ``folder/.lock``) lasts while the file is open and ends with the
    process, however it ends (a SIGKILL leaves the file, not the lock). When another process
    holds it, ``ValueError`` says so. The file holds the holder's pid, for that message.
    """
    path = Path(folder) / LOCK_FILE
    f = open(path, "a+")  # the lock lives as long as the file is open
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): runs are not locked there
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip()
        f.close()
        holder = f"another process (pid {pid})" if pid.isdigit() else "another process"
        raise ValueError(f"{folder}: {holder} is using it (a run trains there); wait for it to end or "
                         "choose another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


# --------------------------------------------------------------------------------------------
# RNG state as plain types and tensors (weights_only-loadable).


def get_rng_state() -> dict[str, Any]:
    py = random.getstate()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    v, keys, gauss = state["python"]
    random.setstate((v, tuple(keys), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Loading with checks.


class CheckpointError(ValueError):
    """An unreadable checkpoint, or one that does not fit the model it is loaded into."""


def safe_load(path: Path, what: str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with one-line errors. A file that holds pickled Python
    objects is refused as such, naming them, and without torch's advice to turn the check off."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors, truncated files, disallowed globals
        msg = str(e).strip()
        if isinstance(e, pickle.UnpicklingError) and ("GLOBAL" in msg or "Unsupported global" in msg):
            try:  # what the file would need unpickled, read without running any of it
                names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except Exception:  # a legacy (pre-1.6) file, or one too damaged to list
                names = []
            objs = f" ({', '.join(names[:3])})" if names else ""
            raise CheckpointError(f"refusing to load {path}: it holds pickled Python objects{objs}, not just "
                                  "tensors, and unpickling them could run code; save a state dict of tensors "
                                  "(or .safetensors)") from None
        if "WeightsUnpickler error:" in msg:  # not a pickle of tensors at all: say what broke
            msg = msg.split("WeightsUnpickler error:", 1)[1].strip()
        first = msg.splitlines()[0] if msg else type(e).__name__
        first = first[: first.index(". ") + 1] if ". " in first[:160] else first[:160]
        raise CheckpointError(f"cannot read {what} {path}: truncated or corrupted PyTorch file ({first})"
                              ) from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a cnnzoo checkpoint safely (``weights_only=True``); clear errors on bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    ckpt = safe_load(path, "checkpoint", map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cnnzoo training checkpoint (format {FORMAT})")
    return ckpt


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def check_compatible(ckpt_config: dict[str, Any], model: str, model_opts: dict[str, Any],
                     where: str = "checkpoint") -> None:
    """Raise naming the difference when a checkpoint was made for another model or option set."""
    if ckpt_config.get("model") != model:
        raise CheckpointError(f"{where} is for model {ckpt_config.get('model')!r}, not {model!r}")
    # YAML turns tuples into lists: compare values in that one form.
    saved, model_opts = _plain(ckpt_config.get("model_opts") or {}), _plain(model_opts)
    def show(d: dict[str, Any], k: str) -> str:
        return f"{k}={d[k]!r}" if k in d else f"{k} unset"

    diffs = [f"{show(saved, k)} (checkpoint) vs {show(model_opts, k)} (given)"
             for k in sorted(set(saved) | set(model_opts)) if saved.get(k) != model_opts.get(k)]
    if diffs:
        raise CheckpointError(f"{where} was made with other options for {model}: {'; '.join(diffs)}")


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``load_state_dict`` that reports missing/unexpected/misshapen tensors in one line."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
        raise CheckpointError(f"{where} does not fit the model: {', '.join(parts)}")
    model.load_state_dict(state)


def model_from_checkpoint(ckpt: dict[str, Any], where: str) -> torch.nn.Module:
    """The registered model a cnnzoo checkpoint was trained as, with its weights loaded."""
    import cnnzoo

    cfg = ckpt["config"]
    model = cnnzoo.create_model(cfg["model"], num_classes=ckpt["num_classes"], in_chans=ckpt["input_size"][0],
                                **cfg["model_opts"])
    load_model_state(model, ckpt["model"], where)
    return model


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """The model weights in a run folder (its ``best.pt``, else ``last.pt``), a cnnzoo checkpoint or
    a plain state-dict file (``torch.load(weights_only=True)``; a ``{"state_dict": ...}``,
    ``{"model": ...}``, ``{"net": ...}`` or ``{"params": ...}`` wrapper and ``module.`` prefixes
    are unwrapped). Returns ``(state, where)``.
    """
    from .evaluate import resolve_checkpoint

    path = resolve_checkpoint(path)
    obj = safe_load(path, "weights")
    if isinstance(obj, dict):
        # wrappers: cnnzoo and many trainers ("model", "state_dict"), kuangliu's CIFAR scripts
        # ("net"), szagoruyko's WRN ("params", with BN statistics apart in "stats")
        for key in ("model", "state_dict", "net", "params"):
            if isinstance(obj.get(key), dict):
                obj = {**obj[key], **(obj.get("stats") or {})} if key == "params" else obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of names to tensors)")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj, str(path)


def load_init_weights(model: torch.nn.Module, source: str | os.PathLike) -> list[str]:
    """Load trained weights into ``model`` to start a new run from them (``--init-from``).

    Every tensor must fit, except the classifier's: when the number of classes differs, the
    model keeps its freshly initialised classifier. Returns what the caller should tell the user.
    """
    state, where = read_weights(source)
    own = model.state_dict()
    get = getattr(model, "get_classifier", None)
    fc = get() if callable(get) else None
    prefix = next((n for n, m in model.named_modules() if m is fc), None) if fc is not None else None
    head = {k for k in own if prefix is not None and k.startswith(prefix + ".")}
    differ = [k for k in head if k in state and state[k].shape != own[k].shape]
    notes = [f"starting from the weights in {where}"]
    if differ:
        old = state[f"{prefix}.weight"].shape[0] if f"{prefix}.weight" in state else "other"
        notes.append(f"the classifier ({prefix}) is re-initialised: the weights are for {old} classes, "
                     f"this run has {getattr(model, 'num_classes', own[differ[0]].shape[0])}")
        state = {**{k: v for k, v in state.items() if k not in head}, **{k: own[k] for k in head}}
    load_model_state(model, state, where)
    return notes
