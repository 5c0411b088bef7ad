"""The classifier training loop (no Django import): data in arrays, progress through hooks.

Checkpoints every epoch (the whole model with its optimizer state, so a run resumes where it
stopped), keeps the best weights by validation macro-F1, stops early, on cancel or at a time
limit (``training.loop.EpochLoop``), then evaluates the best weights on the test split in the
paper's form. Mixed precision and XLA when a GPU is present; MirroredStrategy when there are
several.

Files in ``checkpoint_dir``: ``last.keras``, ``state.json`` (and the epoch before's
``last.prev.keras``, ``state.prev.json``: ``training.loop.load_checkpoint``), ``best.weights.h5``
and at the end ``model.keras``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from training import loop
from training.classifier.config import ClassifierRunConfig
from training.loop import Hooks

if TYPE_CHECKING:  # the data module imports TensorFlow at its top
    from training.classifier.data import ClassifierData


@dataclass
class ClassifierTrainResult:
    stopped: str  # "completed" | "early_stopping" | "cancelled" | "time_limit"
    best_epoch: int | None
    best_val_macro_f1: float | None
    history: list[dict] = field(default_factory=list)
    test_report: dict | None = None
    model_path: Path | None = None


def build_classifier(config: ClassifierRunConfig):
    from training.networks.resnest import ResNeStClassifier

    overrides = {"input_size": config.data.input_size, "dropout": config.dropout}
    if config.width_multiplier is not None:
        overrides["width_multiplier"] = config.width_multiplier
    return ResNeStClassifier.from_preset(config.preset, **overrides)


def train_classifier(
    data: ClassifierData, config: ClassifierRunConfig, checkpoint_dir: Path, hooks: Hooks = Hooks()
) -> ClassifierTrainResult:
    # TensorFlow and the modules that import it stay local: importing this module stays cheap
    import keras

    import training.networks.resnest  # noqa: F401  (registers the custom layers for resuming)
    from training.classifier.data import train_dataset
    from training.classifier.evaluation import split_report, validation_macro_f1
    from training.smoothing import make_targets

    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    devices, strategy = loop.prepare_devices(config.optim.seed)

    targets = make_targets(data.train_labels, data.train_votes, config.targets).astype(np.float32)
    train_ds = train_dataset(data.train_images, targets, config.optim.batch_size, config.augment,
                             seed=config.optim.seed, input_size=config.data.input_size)
    steps = config.optim.steps_per_epoch or int(train_ds.cardinality().numpy())
    if config.optim.steps_per_epoch:
        train_ds = train_ds.repeat()

    state_file = checkpoint_dir / "state.json"
    last_model = checkpoint_dir / "last.keras"
    best_weights = checkpoint_dir / "best.weights.h5"
    with strategy.scope():  # resume after an interruption: the newest readable checkpoint
        model, state, notice = loop.load_checkpoint(
            state_file, lambda previous: keras.saving.load_model(loop.previous_of(last_model) if previous
                                                                 else last_model), [last_model])
        if model is None:
            state = loop.fresh_state()
            model = build_classifier(config)
            model.compile(
                optimizer=keras.optimizers.Adam(config.optim.learning_rate),
                loss={"probabilities": keras.losses.CategoricalCrossentropy()},
                jit_compile=bool(devices["gpus"]),
            )
            # the optimizer's slots made up front spare TensorFlow a second trace of the train step
            model.optimizer.build(model.trainable_variables)

    def train_epoch(callback) -> dict:
        fit = model.fit(train_ds.map(lambda x, y: (x, {"probabilities": y})), epochs=1,
                        steps_per_epoch=steps, verbose=0, callbacks=[callback])
        return {"loss": float(fit.history["loss"][-1])}

    epochs = loop.EpochLoop(
        state=state, state_file=state_file, epochs=config.optim.epochs, steps=steps,
        patience=config.optim.patience,
        time_limit_s=config.optim.time_limit_s or None,  # 0 is no limit for the classifier
        metric="macro_f1", hooks=hooks, notice=notice,
    )
    stopped = epochs.run(
        train_epoch=train_epoch,
        validate=lambda: validation_macro_f1(model, data.val_images, data.val_labels),
        save_best=lambda: loop.save_weights(model, best_weights),
        save_last=lambda: loop.save_model(model, last_model, keep_previous=True),
    )

    result = ClassifierTrainResult(stopped=stopped, best_epoch=state["best_epoch"], best_val_macro_f1=state["best"],
                         history=state["history"])
    if stopped == "cancelled" or not best_weights.exists():
        return result
    model.load_weights(best_weights)
    result.test_report = split_report(model, data.test_images, data.test_labels)
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
