"""python manage.py train classifier --dataset NAME --preset resnest50 ..."""

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Start a training run. By default it is queued on the gpu queue and the command returns "
        "(watch it on the Training page); --inline trains in this process with a progress line. "
        "The run's full configuration is saved on it; the best checkpoint by validation macro-F1 "
        "becomes a model version in the registry (promote it to use it for inference)."
    )

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=["classifier", "detector"], help="which model to train")
        parser.add_argument("--dataset", required=True, help="dataset name")
        parser.add_argument("--preset", default="resnest50",
                            help="resnest14, resnest26, resnest50 (default), resnest101 or resnest_tiny")
        parser.add_argument("--epochs", type=int, default=30, help="maximum epochs (default 30)")
        parser.add_argument("--batch-size", type=int, default=16, help="batch size (default 16, the paper's)")
        parser.add_argument("--input-size", type=int, default=224, help="crop side in pixels (default 224)")
        parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
        parser.add_argument("--targets", choices=["ordinal", "onehot", "votes"], default="ordinal",
                            help="ordinal label smoothing (default), plain one-hot, or consensus vote shares")
        parser.add_argument("--n", type=float, default=2, help="smoothing base n in y_i = n^-|k-i| (2 or 3)")
        parser.add_argument("--raw-smoothing", action="store_true", help="the paper's raw weights, not normalised")
        parser.add_argument("--no-oversample", action="store_true", help="switch off the 36x oversampling")
        parser.add_argument("--no-scale", action="store_true", help="switch off scale augmentation")
        parser.add_argument("--no-erasing", action="store_true", help="switch off random erasing")
        parser.add_argument("--patience", type=int, default=5, help="early stopping patience in epochs")
        parser.add_argument("--time-limit", type=int, default=None, help="stop after this many seconds")
        parser.add_argument("--steps-per-epoch", type=int, default=None, help="cap steps per epoch")
        parser.add_argument("--max-train-crops", type=int, default=None, help="cap training crops (quick runs)")
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        parser.add_argument("--inline", action="store_true", help="train here instead of on a gpu worker")

    def handle(self, *args, **o):
        from annotation.models import Dataset
        from training.augment import AugmentConfig
        from training.config import ClassifierRunConfig, DataConfig, OptimConfig
        from training.services import TrainingRefused, execute_run, start_training_run
        from training.smoothing import TargetConfig

        if o["kind"] == "detector":
            raise CommandError("detector training (YOLOv4) is not available yet; train the classifier")
        try:
            dataset = Dataset.objects.get(name=o["dataset"])
        except Dataset.DoesNotExist:
            raise CommandError(f"no dataset named {o['dataset']!r}") from None
        for key in ("epochs", "batch_size", "input_size", "patience"):
            if o[key] < 1:
                raise CommandError(f"--{key.replace('_', '-')} must be at least 1")
        try:
            config = ClassifierRunConfig(
                preset=o["preset"],
                data=DataConfig(input_size=o["input_size"], max_train_crops=o["max_train_crops"]),
                targets=TargetConfig(kind=o["targets"], n=o["n"], normalize=not o["raw_smoothing"]),
                augment=AugmentConfig(oversample=not o["no_oversample"], scale=not o["no_scale"],
                                      random_erasing=not o["no_erasing"]),
                optim=OptimConfig(epochs=o["epochs"], batch_size=o["batch_size"], learning_rate=o["learning_rate"],
                                  patience=o["patience"], time_limit_s=o["time_limit"],
                                  steps_per_epoch=o["steps_per_epoch"], seed=o["seed"]),
            )
            from training.models.resnest.resnest_config import PRESETS

            if config.preset not in PRESETS:
                raise ValueError(f"unknown preset {config.preset!r}; have: {', '.join(PRESETS)}")
            run = start_training_run(kind="classifier", config=config, dataset=dataset, enqueue=not o["inline"])
        except (ValueError, TrainingRefused) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"run {run.pk}: {dataset.name} v{run.dataset_version.number}, preset {config.preset}")
        if not o["inline"]:
            self.stdout.write("queued on the gpu queue; a worker consuming it will train it")
            return
        run = execute_run(run.pk)
        self.stdout.write(f"run {run.pk}: {run.status}; best validation macro-F1 {run.best_metric}")
        if run.status == "failed":
            raise CommandError(run.error)
        version = getattr(run, "model_version", None)
        if version is not None:
            from training.metrics import format_report_table

            self.stdout.write(f"model version {version.name} in {version.artifact_dir}")
            if version.metrics.get("test"):
                self.stdout.write(format_report_table(version.metrics["test"]))
