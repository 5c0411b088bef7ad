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
        parser.add_argument("--preset", default=None,
                            help="classifier: resnest14, resnest26, resnest50 (default), resnest101, resnest_tiny; "
                                 "detector: yolov4 (default), yolov4_tiny, yolov4_test")
        parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 30; detector 50)")
        parser.add_argument("--batch-size", type=int, default=None,
                            help="batch size (default 16, the paper's; detector 8)")
        parser.add_argument("--input-size", type=int, default=None,
                            help="classifier crop side (default 224); detector side, a multiple of 32 "
                                 "(default the preset's: 608 for yolov4)")
        parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
        parser.add_argument("--no-mosaic", action="store_true", help="detector: switch off mosaic augmentation")
        parser.add_argument("--anchors", choices=["kmeans", "preset"], default="kmeans",
                            help="detector anchors: IoU k-means on the training boxes (default) or the preset's")
        parser.add_argument("--warmup-epochs", type=float, default=1.0,
                            help="detector: linear warm-up before the cosine decay (default 1)")
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
        from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig
        from training.services import TrainingRefused, execute_run, start_training_run
        from training.smoothing import TargetConfig

        try:
            dataset = Dataset.objects.get(name=o["dataset"])
        except Dataset.DoesNotExist:
            raise CommandError(f"no dataset named {o['dataset']!r}") from None
        detector = o["kind"] == "detector"
        defaults = {"preset": "yolov4" if detector else "resnest50", "epochs": 50 if detector else 30,
                    "batch_size": 8 if detector else 16, "input_size": None if detector else 224}
        for key, value in defaults.items():
            if o[key] is None:
                o[key] = value
        for key in ("epochs", "batch_size", "input_size", "patience"):
            if o[key] is not None and o[key] < 1:
                raise CommandError(f"--{key.replace('_', '-')} must be at least 1")
        if detector:
            config = self.detector_config(o)
            kind = "detector"
        else:
            config = self.classifier_config(o, ClassifierRunConfig, DataConfig, TargetConfig, AugmentConfig,
                                            OptimConfig)
            kind = "classifier"
        try:
            run = start_training_run(kind=kind, config=config, dataset=dataset, enqueue=not o["inline"])
        except TrainingRefused as exc:
            raise CommandError(str(exc)) from None
        self.report(run, dataset, config, o, execute_run)

    def detector_config(self, o):
        from training.detector.config import (
            DetectorAugmentConfig,
            DetectorOptimConfig,
            DetectorRunConfig,
        )
        from training.networks.yolov4.presets import PRESETS

        if o["preset"].replace("-", "_") not in PRESETS:
            raise CommandError(f"unknown preset {o['preset']!r} for the detector; have: {', '.join(PRESETS)}")
        try:
            return DetectorRunConfig(
                preset=o["preset"].replace("-", "_"), input_size=o["input_size"], anchors=o["anchors"],
                augment=DetectorAugmentConfig(oversample=not o["no_oversample"], mosaic=not o["no_mosaic"]),
                optim=DetectorOptimConfig(epochs=o["epochs"], batch_size=o["batch_size"],
                                          learning_rate=o["learning_rate"], warmup_epochs=o["warmup_epochs"],
                                          patience=o["patience"], time_limit_s=o["time_limit"],
                                          steps_per_epoch=o["steps_per_epoch"], seed=o["seed"]),
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    def classifier_config(self, o, ClassifierRunConfig, DataConfig, TargetConfig, AugmentConfig, OptimConfig):
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
            from training.networks.resnest.resnest_config import PRESETS

            if config.preset not in PRESETS:
                raise ValueError(f"unknown preset {config.preset!r}; have: {', '.join(PRESETS)}")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        return config

    def report(self, run, dataset, config, o, execute_run):
        self.stdout.write(f"run {run.pk}: {run.kind}, {dataset.name} v{run.dataset_version.number}, "
                          f"preset {config.preset}")
        if not o["inline"]:
            self.stdout.write("queued on the gpu queue; a worker consuming it will train it")
            return
        run = execute_run(run.pk)
        metric = "validation mAP@0.5" if run.kind == "detector" else "validation macro-F1"
        self.stdout.write(f"run {run.pk}: {run.status}; best {metric} {run.best_metric}")
        if run.status == "failed":
            raise CommandError(run.error)
        version = getattr(run, "model_version", None)
        if version is not None:
            self.stdout.write(f"model version {version.name} in {version.artifact_dir}")
            test = version.metrics.get("test")
            if test and run.kind == "classifier":
                from training.metrics import format_report_table

                self.stdout.write(format_report_table(test))
            elif test:
                threshold = version.metrics.get("threshold") or {}
                self.stdout.write(f"test mAP@0.5 {test.get('map')}; operating threshold "
                                  f"{threshold.get('threshold')} (validation recall {threshold.get('recall')}, "
                                  f"precision {threshold.get('precision')})")
