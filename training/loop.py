"""The epoch loop both trainers share (no Django import): checkpoints, best weights by a
validation figure, early stopping, time limits, cancellation and progress reporting.

A trainer (``training.classifier.trainer``, ``training.detector.trainer``) builds its model and
data, then hands ``EpochLoop.run`` three callables: train one epoch (with the loop's progress
callback), validate, and save the resumable checkpoint. The loop keeps ``state`` (epoch, best,
best_epoch, bad_epochs, history, plus whatever the trainer put in it) and writes it atomically
to ``state.json`` after every finished epoch, so calling the trainer again with the same folder
resumes after the last finished epoch.

Every checkpoint file is written to a temporary name and renamed over the old one
(``os.replace``: a reader sees the old file or the new one, never half of one). The epoch's
resumable checkpoint and ``state.json`` keep their previous version beside them
(``last.prev.keras``, ``state.prev.json``...: ``previous_of``) until the new one is in place, and
``load_checkpoint`` falls back to it when the newest cannot be read (a disk that tore a file, a
kill between two renames); the run's progress then says so (``"resumed"``).

Progress (``Hooks.on_progress``): every 5 batches and at an epoch's last one ``{"step",
"steps", "epoch", "epochs", "loss", "eta_s", "best_val_<metric>"}``; at every epoch's end
``{..., "val_<metric>", "history"}`` with ``eta_s`` None. Cancel (``Hooks.should_stop``) is
checked after every batch; the unfinished epoch is not kept. The time limit is checked after
every batch; the epoch under way stops there, is evaluated and kept, and the run ends.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Progress is reported every this many batches (and at an epoch's last batch).
PROGRESS_EVERY = 5


@dataclass
class Hooks:
    on_progress: Callable[[dict], None] = lambda progress: None
    should_stop: Callable[[], bool] = lambda: False


def accelerator() -> dict:
    import tensorflow as tf  # heavy optional import, kept local

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except Exception:  # details are best-effort
            names.append(gpu.name)
    return {"gpus": len(gpus), "names": names}


def prepare_devices(seed: int):
    """Seed every generator; mixed precision when a GPU is present; MirroredStrategy when there
    are several. Returns ``(accelerator() dict, strategy)``."""
    import keras  # heavy optional import, kept local
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    devices = accelerator()
    if devices["gpus"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf.distribute.MirroredStrategy() if devices["gpus"] > 1 else tf.distribute.get_strategy()
    return devices, strategy


def fresh_state(**extra) -> dict:
    """The state of a run before its first epoch (``extra``: what the trainer keeps beside it)."""
    return {"epoch": -1, "best": None, "best_epoch": None, "history": [], "bad_epochs": 0, **extra}


def previous_of(path: Path) -> Path:
    """Where the previous version of a checkpoint file is kept: ``last.keras`` ->
    ``last.prev.keras``, ``last.weights.h5`` -> ``last.prev.weights.h5``, ``state.json`` ->
    ``state.prev.json``."""
    path = Path(path)
    stem, dot, rest = path.name.partition(".")
    return path.with_name(f"{stem}.prev{dot}{rest}")


def put_in_place(tmp: Path, path: Path, keep_previous: bool) -> None:
    """Rename the written ``tmp`` over ``path`` (``keep_previous``: the old one moves aside first)."""
    if keep_previous and path.exists():
        os.replace(path, previous_of(path))
    os.replace(tmp, path)


def save_weights(model, path: Path, *, keep_previous: bool = False) -> None:
    """``model.save_weights`` to a temporary name beside ``path``, then renamed over it
    (``keep_previous``: the old file becomes ``previous_of(path)`` first)."""
    tmp = path.with_name(path.name.replace(".weights.h5", "-tmp.weights.h5"))
    model.save_weights(tmp)
    put_in_place(tmp, path, keep_previous)


def save_model(model, path: Path, *, keep_previous: bool = False) -> None:
    """``model.save`` (a ``.keras`` file) to a temporary name beside ``path``, then renamed."""
    tmp = path.with_name(path.stem + "-tmp.keras")
    model.save(tmp)
    put_in_place(tmp, path, keep_previous)


def write_json(path: Path, data, *, keep_previous: bool = False) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    put_in_place(tmp, path, keep_previous)


def load_checkpoint(state_file: Path, load: Callable[[bool], object], needs: list[Path]):
    """The newest readable checkpoint: ``(loaded, state, notice)``, or ``(None, None, notice)``
    when there is none (notice None on a first start, else what could not be read).

    load(previous) reads the checkpoint's files (``needs``, or their ``previous_of`` when
    previous is True) and returns what it loaded; it raises on a torn or missing file. The
    newest is tried first, then the previous one with ``state.prev.json``."""
    state_file = Path(state_file)
    problems = []
    for previous in (False, True):
        files = [previous_of(p) for p in (state_file, *needs)] if previous else [state_file, *needs]
        if not all(f.exists() for f in files):
            if any(f.exists() for f in files):
                problems.append(f"{'the previous' if previous else 'the newest'} checkpoint is incomplete")
            continue
        try:
            state = json.loads(files[0].read_text())
            loaded = load(previous)
        except Exception as exc:  # a torn file raises whatever its reader raises
            problems.append(f"{files[1].name} is unreadable ({type(exc).__name__})")
            continue
        if problems:
            return loaded, state, f"resumed from the previous checkpoint (epoch {state['epoch'] + 1}): " \
                + "; ".join(problems)
        return loaded, state, None
    return None, None, ("no readable checkpoint, started over: " + "; ".join(problems)) if problems else None


def progress_callback(loop: EpochLoop, epoch: int):
    """The Keras callback for one epoch's ``fit``: progress every few batches; stops the fit on
    cancel (remembered in ``loop.cancelled``) or past the time limit."""
    import keras  # heavy optional import, kept local

    class Progress(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_started = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            done, steps = batch + 1, loop.steps
            if done % PROGRESS_EVERY == 0 or done == steps:
                per_step = (time.monotonic() - self.epoch_started) / done
                remaining_epochs = loop.epochs - epoch - 1
                loop.report({
                    "step": done, "steps": steps, "epoch": epoch + 1, "epochs": loop.epochs,
                    "loss": float((logs or {}).get("loss", float("nan"))),
                    "eta_s": round(per_step * ((steps - done) + remaining_epochs * steps), 1),
                    loop.best_key: loop.state["best"],
                })
            if loop.hooks.should_stop():
                loop.cancelled = True
                self.model.stop_training = True
            elif loop.past_limit():
                self.model.stop_training = True

    return Progress()


class EpochLoop:
    """Epochs ``state["epoch"] + 1 .. epochs - 1`` of ``steps`` batches each.

    metric: the validation figure's name ("macro_f1", "map"): progress and history carry it as
    ``val_<metric>`` and ``best_val_<metric>``. A higher figure is better; a validation that
    returns None (nothing to compare) keeps the latest weights as the best.
    """

    def __init__(self, *, state: dict, state_file: Path, epochs: int, steps: int, patience: int,
                 time_limit_s: float | None, metric: str, hooks: Hooks, notice: str | None = None) -> None:
        self.state = state
        self.state_file = Path(state_file)
        self.epochs = int(epochs)
        self.steps = int(steps)
        self.patience = patience
        self.time_limit_s = time_limit_s
        self.val_key, self.best_key = f"val_{metric}", f"best_val_{metric}"
        self.hooks = hooks
        #: how the run resumed when it fell back to an older checkpoint: every progress says it
        self.notice = notice
        self.cancelled = False
        self.started = time.monotonic()

    def past_limit(self) -> bool:
        limit = self.time_limit_s
        return limit is not None and time.monotonic() - self.started > limit

    def report(self, progress: dict) -> None:
        self.hooks.on_progress({**progress, "resumed": self.notice} if self.notice else progress)

    def run(
        self,
        *,
        train_epoch: Callable[[object], dict],
        validate: Callable[[], float | None],
        save_best: Callable[[], None],
        save_last: Callable[[], None],
        extras: Callable[[], dict] = dict,
        early_stopping: bool = True,
    ) -> str:
        """Train to the end; returns why it stopped: "completed" | "early_stopping" |
        "cancelled" | "time_limit".

        train_epoch(callback) -> the epoch's training figures (the first is "loss"); validate()
        -> the validation figure or None; save_best() writes the best weights; save_last() the
        resumable checkpoint (``state.json`` is written after it); extras() -> figures the
        history entry carries after the validation figure; early_stopping: whether patience
        applies (not without validation ground truth).
        """
        state = self.state
        for epoch in range(state["epoch"] + 1, self.epochs):
            logs = train_epoch(progress_callback(self, epoch))
            if self.cancelled or self.hooks.should_stop():
                return "cancelled"
            value = validate()
            entry = {"epoch": epoch + 1, **logs, self.val_key: value, **extras(),
                     "elapsed_s": round(time.monotonic() - self.started, 1)}
            state["history"].append(entry)
            if value is None or state["best"] is None or value > state["best"]:
                state.update(best=value, best_epoch=epoch + 1, bad_epochs=0)
                save_best()
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            save_last()
            write_json(self.state_file, state, keep_previous=True)
            self.report({"step": self.steps, "steps": self.steps, "epoch": epoch + 1,
                                    "epochs": self.epochs, "loss": entry["loss"], self.val_key: value,
                                    self.best_key: state["best"], "eta_s": None,
                                    "history": list(state["history"])})
            if self.past_limit():
                return "time_limit"
            if early_stopping and state["bad_epochs"] >= self.patience:
                return "early_stopping"
        return "completed"
