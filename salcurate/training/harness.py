"""What every training command shares: device and precision, model set-up, checkpoints, logs.

The training loops themselves stay in their commands (``train-scorer`` counts epochs,
``retrain`` iterations); the mechanics around them live here once, as small pieces:

* :class:`Precision` resolves the device's numerics: bf16 autocast and channels-last memory
  format, both on by default on CUDA; :meth:`Precision.inputs` moves a batch to the device.
* :func:`prepare_model` puts a model on the device (channels-last, cuDNN autotuning), wraps it
  in DistributedDataParallel under ``torchrun`` and optionally in ``torch.compile``.
* :func:`recipe_of` is what a run's weights depend on: the config's settings less those marked
  ``run_only`` (``salcurate.config.run_only_names``), plus facts about the data.
  :class:`Checkpoint` writes and reads a run's checkpoint through the command's own file format
  and refuses a resume whose recipe differs, naming the settings that differ.
* :class:`RunLog` appends JSON lines (and TensorBoard scalars when installed) and reports each
  record as :meth:`salcurate.events.Events.metrics`.
* :func:`checkpoint_on_interrupt` turns Ctrl-C into a checkpoint and a one-line error that says
  how to continue (``resume``).
* :func:`poly_lr` is the learning-rate schedule of every iteration-counted loop.
* :func:`write_config` saves the resolved config beside the run as TOML (what ``--config``
  reads back) and, where a command keeps one, as JSON with the run's facts.

Only the main process (rank 0) writes files; every piece knows that through ``main``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from salcurate import distributed as ddp
from salcurate.config import run_only_names, to_dict, to_toml
from salcurate.errors import InputError, SalcurateError
from salcurate.events import NO_EVENTS, Events

log = logging.getLogger(__name__)

#: Recipe keys that describe the data rather than a setting (a digest of the store's sample ids).
DATA_KEYS: tuple[str, ...] = ("store_ids",)


# ------------------------------------------------------------------------------------------
# Device and precision
# ------------------------------------------------------------------------------------------
def cuda_bf16_supported() -> bool:
    """Whether the current CUDA GPU computes in bf16 natively (not emulated: compute capability 8.0+)."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch without the including_emulation argument
        return bool(torch.cuda.is_bf16_supported())


def _gpu_name(device: torch.device) -> str:
    try:
        return f"the GPU {torch.cuda.get_device_name(device)}"
    except Exception:  # no CUDA driver here (tests that pretend a GPU)
        return "this GPU"


class Precision:
    """Where and in which numerics a run computes.

    ``amp``: bf16 autocast of the forward pass (losses stay float32); ``channels_last``: 4-d
    tensors in NHWC memory format.  Both default to on for CUDA and off elsewhere; ``amp`` stays
    off by default on a GPU without bf16, and asking for it there is an InputError.
    """

    def __init__(self, device: torch.device, *, amp: bool | None = None, channels_last: bool | None = None) -> None:
        self.device = device
        bf16 = device.type != "cuda" or cuda_bf16_supported()
        if amp and not bf16:
            raise InputError(f"bf16 autocast (amp) was asked for, but {_gpu_name(device)} has no bf16 support "
                             "(compute capability 8.0 or newer); drop amp to compute in float32", param="amp")
        # the default: on for CUDA, where the GPU computes in bf16 (else float32, with a note)
        self.amp = bool(amp) if amp is not None else device.type == "cuda" and bf16
        if amp is None and not bf16:
            log.info("%s has no bf16 support: computing in float32", _gpu_name(device))
        self.channels_last = bool(channels_last) if channels_last is not None else device.type == "cuda"

    def autocast(self) -> Any:
        """The forward pass's autocast context (a no-op when ``amp`` is off)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, channels-last when that is on."""
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def to_dict(self) -> dict[str, Any]:
        """What a run records about its numerics."""
        return {"device_used": self.device.type, "amp_used": self.amp, "channels_last_used": self.channels_last}


def prepare_model(model: torch.nn.Module, precision: Precision, info: ddp.DistInfo | None = None, *,
                  compile: bool = False) -> torch.nn.Module:
    """Move ``model`` (in place) to the device and memory format; return the module to call forward on.

    On CUDA cuDNN picks its fastest kernels (``cudnn.benchmark``).  Under ``torchrun`` the
    returned module is a DistributedDataParallel wrapper (gradients averaged over ranks), with
    ``compile`` a ``torch.compile`` of it.  Optimizers and checkpoints use ``model`` itself.
    """
    model.to(precision.device)
    if precision.channels_last:
        model.to(memory_format=torch.channels_last)
    if precision.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    net: torch.nn.Module = model
    if info is not None and info.enabled:
        device_ids = [precision.device.index] if precision.device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=False)
    return torch.compile(net) if compile else net  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------
# Recipe and checkpoints
# ------------------------------------------------------------------------------------------
def _json(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists): what a checkpoint's recipe compares to."""
    return json.loads(json.dumps(value))


def recipe_of(config: Any, **data: Any) -> dict[str, Any]:
    """What a run's weights depend on: ``config``'s settings less the ``run_only`` ones, plus ``data``.

    Nested settings are flattened to their names (a name appears once in a config); ``data``
    holds facts such as the store's digest (``store_ids``) or the number of processes.
    """
    skip = set(run_only_names(type(config)))
    flat: dict[str, Any] = {}

    def walk(d: Mapping[str, Any]) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v)
            elif k not in skip:
                flat[k] = v

    walk(to_dict(config))
    return _json({**flat, **data})


def recipe_differences(saved: Mapping[str, Any], recipe: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between two recipes (sorted)."""
    return sorted(k for k in set(recipe) | set(saved) if recipe.get(k) != saved.get(k))


def check_recipe(saved: Mapping[str, Any] | None, recipe: Mapping[str, Any], path: Path) -> None:
    """Refuse to resume the checkpoint at ``path`` when its recipe is not ``recipe``; name what differs."""
    diff = recipe_differences(saved or {}, recipe)
    if not diff:
        return
    settings = [k for k in diff if k not in DATA_KEYS]
    what = []
    if settings:
        what.append(f"other settings ({', '.join(settings)} differ)")
    if len(settings) < len(diff):
        what.append("other data (the store's samples differ)")
    raise InputError(f"{path}: the checkpoint was trained with other settings or data: {' and '.join(what)}; "
                     "resume with the same settings, or drop resume and choose another output to start anew",
                     param=("resume", "output"))


class Checkpoint:
    """A run's checkpoint file, written and read through the command's own format.

    ``write(path, state)`` stores a state dict (the command's model, optimizer, position...);
    ``read(path)`` returns it.  :meth:`save` adds the run's ``recipe`` to the state, and
    :meth:`resume` refuses a checkpoint whose recipe differs.  ``main``: only the main process
    writes.
    """

    def __init__(self, path: Path, recipe: Mapping[str, Any], *, write: Callable[[Path, dict[str, Any]], Any],
                 read: Callable[[Path], dict[str, Any]], main: bool = True) -> None:
        self.path, self.recipe, self._write, self._read, self.main = Path(path), dict(recipe), write, read, main

    def resume(self, resume: bool, *, refuse_existing: bool = False) -> dict[str, Any] | None:
        """The state to continue from (None for a new run).

        ``refuse_existing``: a new run refuses to start over an existing checkpoint (the run
        folder holds a run); otherwise a new run overwrites it.
        """
        if not resume:
            if refuse_existing and self.main and self.path.exists():
                raise InputError(f"{self.path.parent} already holds a run ({self.path.name}); pass resume to "
                                 "continue it, or choose another output folder", param=("resume", "output"))
            return None
        if not self.path.exists():
            raise InputError(f"{self.path}: no checkpoint to resume from; drop resume to start training",
                             param="resume")
        state = self._read(self.path)
        check_recipe(state.get("recipe"), self.recipe, self.path)
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` with the recipe (atomically, through the command's writer)."""
        if self.main:
            self._write(self.path, {**state, "recipe": self.recipe})


def optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimizer's state with string keys (checkpoints that hold plain types only)."""
    state = opt.state_dict()
    return {"state": {str(k): v for k, v in state["state"].items()}, "param_groups": state["param_groups"]}


def restore_optimizer(opt: torch.optim.Optimizer, state: Mapping[str, Any] | None) -> None:
    """Load a state saved by :func:`optimizer_state` (or a plain ``state_dict()``) into ``opt``."""
    if state is None:
        return
    opt.load_state_dict({"state": {int(k): v for k, v in state["state"].items()},
                         "param_groups": state["param_groups"]})


@contextlib.contextmanager
def checkpoint_on_interrupt(save: Callable[[], str], checkpoint: Path) -> Iterator[None]:
    """On Ctrl-C inside the block: ``save()`` (which writes the checkpoint and says where the
    run stopped, e.g. ``"at iteration 40"``), then a one-line error that says how to continue."""
    try:
        yield
    except KeyboardInterrupt:
        where = save()
        raise SalcurateError(f"interrupted {where}; checkpoint saved to {checkpoint}: continue with resume",
                             param="resume") from None


# ------------------------------------------------------------------------------------------
# Logs and the resolved config
# ------------------------------------------------------------------------------------------
def poly_lr(base: float, iteration: int, max_iter: int, power: float) -> float:
    """The poly schedule (SAL Eq. 15, DeepLab's): ``base (1 - iteration / max_iter) ^ power``, 0 past the end."""
    return base * max(0.0, 1.0 - iteration / max_iter) ** power


def _tensorboard(folder: Path | None) -> Any:
    if folder is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed: the JSONL log is the record
        log.debug("tensorboard not installed; metrics go to the JSONL log only")
        return None
    return SummaryWriter(str(folder))


class RunLog:
    """A JSON-lines log of a run; each record also goes to TensorBoard and to ``events.metrics``.

    ``step``: the record's key that counts progress (``"epoch"``, ``"iteration"``), TensorBoard's
    step; every other number in a record is a scalar there.  ``tensorboard``: the folder for
    event files (None: none; nothing either when tensorboard is not installed).  ``main``: only
    the main process writes and reports.
    """

    def __init__(self, path: Path, *, step: str, tensorboard: Path | None = None, events: Events | None = None,
                 main: bool = True) -> None:
        self.path, self.step, self.events, self.main = Path(path), step, events or NO_EVENTS, main
        self._tb = _tensorboard(tensorboard) if main else None

    def write(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k != self.step and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, record[self.step])
        self.events.metrics(record)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def write_config(path: Path, config: Any, *, command: str, json_path: Path | None = None,
                 facts: Mapping[str, Any] | None = None, main: bool = True) -> None:
    """Save the resolved ``config`` as TOML at ``path`` (``salcurate COMMAND --config`` reads it
    back); with ``json_path`` also ``facts`` (the resolved settings and what the run found) as JSON."""
    if not main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"salcurate {command}: the resolved settings of this run.\n"
              f"Run again with `salcurate {command} --config {path.name}` (options given there override these).")
    path.write_text(to_toml(config, header=header), encoding="utf-8")
    if json_path is not None:
        json_path.write_text(json.dumps(dict(facts or {}), indent=2) + "\n", encoding="utf-8")
