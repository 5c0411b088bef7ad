"""The classifier training loop (no Django import): data in arrays, progress through hooks.

Checkpoints every epoch (the whole model with its optimizer state, so a run resumes where it
stopped), keeps the best weights by validation macro-F1, stops early, on cancel or at a time
limit, then evaluates the best weights on the test split in the paper's form. Mixed precision
and XLA when a GPU is present; MirroredStrategy when there are several.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.config import ClassifierRunConfig


@dataclass
class ClassifierData:
    train_images: np.ndarray  # uint8 (N, S, S, 3)
    train_labels: np.ndarray  # int (N,)
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    train_votes: np.ndarray | None = None  # (N, 6) vote shares, for TargetConfig(kind="votes")


@dataclass
class Hooks:
    on_progress: Callable[[dict], None] = lambda progress: None
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class TrainResult:
    stopped: str  # "completed" | "early_stopping" | "cancelled" | "time_limit"
    best_epoch: int | None
    best_val_macro_f1: float | None
    history: list[dict] = field(default_factory=list)
    test_report: dict | None = None
    model_path: Path | None = None


def accelerator() -> dict:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for gpu in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
        except Exception:  # details are best-effort
            names.append(gpu.name)
    return {"gpus": len(gpus), "names": names}


def build_classifier(config: ClassifierRunConfig):
    from training.networks.resnest import ResNeStClassifier

    overrides = {"input_size": config.data.input_size, "dropout": config.dropout}
    if config.width_multiplier is not None:
        overrides["width_multiplier"] = config.width_multiplier
    return ResNeStClassifier.from_preset(config.preset, **overrides)


def predict_probabilities(model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    from training.pipeline import eval_dataset

    if len(images) == 0:
        return np.zeros((0, 6), dtype=np.float32)
    dummy = np.zeros((len(images), 6), dtype=np.float32)
    out = []
    for batch, _ in eval_dataset(images, dummy, batch_size):
        out.append(np.asarray(model(batch, training=False)["probabilities"]))
    return np.concatenate(out)


def train_classifier(
    data: ClassifierData, config: ClassifierRunConfig, checkpoint_dir: Path, hooks: Hooks = Hooks()
) -> TrainResult:
    import keras
    import tensorflow as tf

    import training.networks.resnest  # noqa: F401  (registers the custom layers for resuming)
    from training.metrics import classification_report, macro_f1
    from training.pipeline import train_dataset
    from training.smoothing import make_targets

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.optim.seed)
    devices = accelerator()
    if devices["gpus"]:
        keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf.distribute.MirroredStrategy() if devices["gpus"] > 1 else tf.distribute.get_strategy()

    targets = make_targets(data.train_labels, data.train_votes, config.targets).astype(np.float32)
    train_ds = train_dataset(data.train_images, targets, config.optim.batch_size, config.augment,
                             seed=config.optim.seed, input_size=config.data.input_size)
    steps = config.optim.steps_per_epoch or int(train_ds.cardinality().numpy())
    if config.optim.steps_per_epoch:
        train_ds = train_ds.repeat()

    state_file = checkpoint_dir / "state.json"
    last_model = checkpoint_dir / "last.keras"
    best_weights = checkpoint_dir / "best.weights.h5"
    state = {"epoch": -1, "best": None, "best_epoch": None, "history": [], "bad_epochs": 0}
    with strategy.scope():
        if last_model.exists() and state_file.exists():  # resume after an interruption
            model = keras.saving.load_model(last_model)
            state = json.loads(state_file.read_text())
        else:
            model = build_classifier(config)
            model.compile(
                optimizer=keras.optimizers.Adam(config.optim.learning_rate),
                loss={"probabilities": keras.losses.CategoricalCrossentropy()},
                jit_compile=bool(devices["gpus"]),
            )
            # the optimizer's slots made up front spare TensorFlow a second trace of the train step
            model.optimizer.build(model.trainable_variables)

    started = time.monotonic()
    stopped = "completed"

    class Progress(keras.callbacks.Callback):
        def __init__(self, epoch):
            super().__init__()
            self.epoch = epoch
            self.epoch_started = time.monotonic()

        def on_train_batch_end(self, batch, logs=None):
            done = batch + 1
            if done % 5 == 0 or done == steps:
                per_step = (time.monotonic() - self.epoch_started) / done
                remaining_epochs = config.optim.epochs - self.epoch - 1
                hooks.on_progress({
                    "step": done, "steps": steps, "epoch": self.epoch + 1, "epochs": config.optim.epochs,
                    "loss": float((logs or {}).get("loss", float("nan"))),
                    "eta_s": round(per_step * ((steps - done) + remaining_epochs * steps), 1),
                    "best_val_macro_f1": state["best"],
                })
            if hooks.should_stop() or _past_limit():
                self.model.stop_training = True

    def _past_limit() -> bool:
        limit = config.optim.time_limit_s
        return bool(limit) and time.monotonic() - started > limit

    for epoch in range(state["epoch"] + 1, config.optim.epochs):
        fit = model.fit(train_ds.map(lambda x, y: (x, {"probabilities": y})), epochs=1,
                        steps_per_epoch=steps, verbose=0, callbacks=[Progress(epoch)])
        if hooks.should_stop():
            stopped = "cancelled"
            break
        val_pred = predict_probabilities(model, data.val_images).argmax(axis=1)
        val_f1 = float(macro_f1(data.val_labels, val_pred)) if len(data.val_labels) else 0.0
        entry = {"epoch": epoch + 1, "loss": float(fit.history["loss"][-1]), "val_macro_f1": val_f1,
                 "elapsed_s": round(time.monotonic() - started, 1)}
        state["history"].append(entry)
        if state["best"] is None or val_f1 > state["best"]:
            state.update(best=val_f1, best_epoch=epoch + 1, bad_epochs=0)
            model.save_weights(best_weights)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        model.save(last_model)
        state_file.write_text(json.dumps(state))
        hooks.on_progress({"step": steps, "steps": steps, "epoch": epoch + 1, "epochs": config.optim.epochs,
                           "loss": entry["loss"], "val_macro_f1": val_f1, "best_val_macro_f1": state["best"],
                           "eta_s": None, "history": list(state["history"])})
        if _past_limit():
            stopped = "time_limit"
            break
        if state["bad_epochs"] >= config.optim.patience:
            stopped = "early_stopping"
            break

    result = TrainResult(stopped=stopped, best_epoch=state["best_epoch"], best_val_macro_f1=state["best"],
                         history=state["history"])
    if stopped == "cancelled" or not best_weights.exists():
        return result
    model.load_weights(best_weights)
    test_pred = predict_probabilities(model, data.test_images).argmax(axis=1)
    result.test_report = classification_report(data.test_labels, test_pred) if len(data.test_labels) else None
    final = checkpoint_dir / "model.keras"
    model.save(final)
    result.model_path = final
    return result


def export_saved_model(model_path: Path, out_dir: Path) -> Path:
    """A TensorFlow SavedModel of the trained classifier, for serving."""
    import keras

    import training.networks.resnest  # noqa: F401  (registers the custom layers for loading)

    model = keras.saving.load_model(model_path)
    out_dir = Path(out_dir)
    model.export(str(out_dir), format="tf_saved_model")
    return out_dir
