"""python manage.py ablate_classifier DATASET --seeds 3 ..."""

import json
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "The paper's classifier ablation on a dataset's ground truth: trains without oversampling, "
        "with the 36x oversampling, and with oversampling + ordinal label smoothing, on the same "
        "seeds (each seed its own 70/15/15 split by image, stratified by grade) and the same number "
        "of steps, then prints the table of macro-F1 (mean +- sd over seeds) beside the paper's. "
        "Trains in this process. The defaults are the paper's setting (ResNeSt-50, 224 px, batch 16), "
        "for a GPU host; on a CPU use a small preset, e.g. --preset resnest_tiny --input-size 64."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="dataset name")
        parser.add_argument("--seeds", type=int, default=3, help="how many seeds (0, 1, ...; default 3)")
        parser.add_argument("--preset", default="resnest50", help="ResNeSt preset (default resnest50)")
        parser.add_argument("--width-multiplier", type=float, default=None, help="scale the preset's channels")
        parser.add_argument("--input-size", type=int, default=224, help="crop side in pixels (default 224)")
        parser.add_argument("--margin", type=float, default=0.25, help="context around each box (default 0.25)")
        parser.add_argument("--epochs", type=int, default=10, help="epochs per run (default 10)")
        parser.add_argument("--steps-per-epoch", type=int, default=100,
                            help="optimizer steps per epoch, equal for every variant (default 100)")
        parser.add_argument("--batch-size", type=int, default=16, help="batch size (default 16, the paper's)")
        parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
        parser.add_argument("--patience", type=int, default=1000, help="early stopping patience (default: none)")
        parser.add_argument("--n", type=float, default=2, help="label smoothing base n (2 or 3; default 2)")
        parser.add_argument("--raw-smoothing", action="store_true", help="the paper's raw weights, not normalised")
        parser.add_argument("--scale", action="store_true", help="add on-the-fly scale augmentation to every variant")
        parser.add_argument("--erasing", action="store_true", help="add random erasing to every variant")
        parser.add_argument("--out", default=None, help="folder for ablation.json and ablation.md")

    def handle(self, *args, **o):
        # imported here, not at the top: the ablation loads TensorFlow, and --help should not wait for it
        from annotation.bethesda import BETHESDA
        from annotation.models import Dataset
        from annotation.selectors import images_by_id
        from training.ablation import format_table, run_ablation
        from training.augment import AugmentConfig
        from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig
        from training.networks.resnest.resnest_config import PRESETS
        from training.services import image_crops, split_crops, truth_for
        from training.splits import image_grade, stratified_split

        try:
            dataset = Dataset.objects.get(name=o["dataset"])
        except Dataset.DoesNotExist:
            raise CommandError(f"no dataset named {o['dataset']!r}") from None
        if o["preset"] not in PRESETS:
            raise CommandError(f"unknown preset {o['preset']!r}; have: {', '.join(PRESETS)}")
        for key in ("seeds", "epochs", "steps_per_epoch", "batch_size", "input_size"):
            if o[key] < 1:
                raise CommandError(f"--{key.replace('_', '-')} must be at least 1")
        try:
            base = ClassifierRunConfig(
                preset=o["preset"], width_multiplier=o["width_multiplier"], dropout=0.2,
                data=DataConfig(input_size=o["input_size"], margin=o["margin"]),
                augment=AugmentConfig(scale=o["scale"], random_erasing=o["erasing"]),
                optim=OptimConfig(epochs=o["epochs"], batch_size=o["batch_size"], learning_rate=o["learning_rate"],
                                  patience=o["patience"], steps_per_epoch=o["steps_per_epoch"]),
            )
            from training.smoothing import TargetConfig

            TargetConfig(kind="ordinal", n=o["n"], normalize=not o["raw_smoothing"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        images = list(images_by_id(dataset=dataset))
        truth = truth_for(images)
        images = [im for im in images if truth[im.pk]]
        if len(images) < 7:
            raise CommandError(f"{dataset.name} has {len(images)} images with ground truth; the ablation needs "
                               "at least 7 (70/15/15 by image)")
        self.stdout.write(f"{dataset.name}: cropping {sum(len(truth[im.pk]) for im in images)} clusters "
                          f"from {len(images)} images at {o['input_size']} px")
        crops = image_crops(images, input_size=o["input_size"], margin=o["margin"])
        grades = [image_grade([BETHESDA.index(b.label) for b, _ in truth[im.pk]]) for im in images]

        def data_for_seed(seed):
            splits = stratified_split([im.pk for im in images], grades, seed=seed)
            return split_crops(crops, splits, input_size=o["input_size"], seed=seed)

        started = time.monotonic()
        seeds = list(range(o["seeds"]))
        self.stdout.write(f"3 variants x {len(seeds)} seeds, {o['epochs']} epochs x {o['steps_per_epoch']} steps "
                          f"of {o['batch_size']} each, preset {o['preset']}")
        with tempfile.TemporaryDirectory(prefix="ablation-") as work:
            try:
                result = run_ablation(data_for_seed, base, seeds, Path(work), n=o["n"],
                                      normalize=not o["raw_smoothing"],
                                      progress=lambda line: self.stdout.write(
                                          f"[{time.monotonic() - started:6.0f} s] {line}"))
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        table = format_table(result)
        self.stdout.write("")
        self.stdout.write(table)
        for sizes in result.data_sizes:
            self.stdout.write(f"seed {sizes['seed']}: {sizes['train']} train / {sizes['val']} val / "
                              f"{sizes['test']} test crops")
        self.stdout.write(f"took {time.monotonic() - started:.0f} s")
        if o["out"]:
            out = Path(o["out"])
            out.mkdir(parents=True, exist_ok=True)
            (out / "ablation.json").write_text(json.dumps({"dataset": dataset.name, **result.to_json()}, indent=1))
            (out / "ablation.md").write_text(table + "\n")
            self.stdout.write(f"wrote {out / 'ablation.json'} and {out / 'ablation.md'}")
