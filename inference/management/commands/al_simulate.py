"""python manage.py al_simulate DATASET --strategies random,entropy --rounds R --batch B --seeds 3 ..."""

import json
import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotation.bethesda import BETHESDA
from annotation.models import Dataset
from annotation.selectors import images_by_id
from inference import active_learning as al
from inference.strategies import SIMULATION_STRATEGIES, check_simulation_strategies
from training.augment import AugmentConfig
from training.classifier.config import ClassifierRunConfig, DataConfig, OptimConfig
from training.services import image_crops, truth_for

TTA_CHOICES = ("orientations", "all", "ensemble")


class Command(BaseCommand):
    help = (
        "Simulated active learning on a dataset's ground truth (the truth plays the expert): per "
        "seed, a test set of whole images and a pool of the others' clusters; from a random initial "
        "set, every round trains a fresh classifier on the labelled clusters (fixed steps, no "
        "validation; --ensemble N trains N and averages them), records test macro-F1, ranks the "
        "unlabelled pool with each strategy and "
        "reveals the top --batch. Prints the learning curves (macro-F1 mean +- sd over seeds "
        "against labels used) and the label efficiency of the best strategy against random; "
        "--out writes al_simulate.json and al_curve.png. Trains in this process; the defaults "
        "(ResNeSt-tiny, 64 px) are sized for a CPU."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="dataset name")
        parser.add_argument("--strategies", default="random,entropy,margin",
                            help="comma-separated strategy names, of " + ", ".join(SIMULATION_STRATEGIES)
                                 + "; add +diverse to any for k-center diversity on the embeddings "
                                 "(default random,entropy,margin)")
        parser.add_argument("--rounds", type=int, default=5, help="acquisition rounds (default 5)")
        parser.add_argument("--batch", type=int, default=20, help="clusters revealed per round (default 20)")
        parser.add_argument("--initial", type=int, default=None,
                            help="random clusters labelled before round 0 (default: --batch)")
        parser.add_argument("--seeds", type=int, default=3, help="how many seeds (0, 1, ...; default 3)")
        parser.add_argument("--test-fraction", type=float, default=0.25,
                            help="share of the images held out as the test set (default 0.25)")
        parser.add_argument("--preset", default="resnest_tiny", help="ResNeSt preset (default resnest_tiny)")
        parser.add_argument("--width-multiplier", type=float, default=None, help="scale the preset's channels")
        parser.add_argument("--input-size", type=int, default=64, help="crop side in pixels (default 64)")
        parser.add_argument("--margin", type=float, default=0.25, help="context around each box (default 0.25)")
        parser.add_argument("--steps", type=int, default=100,
                            help="optimizer steps per round, the same for every round and strategy (default 100)")
        parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
        parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
        parser.add_argument("--ensemble", type=int, default=1,
                            help="classifiers trained per round from different seeds; their mean "
                                 "probabilities score the test set and the pool (default 1). Costs "
                                 "that many times the training; steadies the curves")
        parser.add_argument("--tta", choices=TTA_CHOICES, default="orientations",
                            help="what the tta_* strategies compare: the 4 orientations (default), "
                                 "all 36 oversampling variants, or the --ensemble members' votes "
                                 "(query by committee: tta_bald is then BALD over the ensemble)")
        parser.add_argument("--pool-factor", type=float, default=10,
                            help="+diverse: candidates per pick before k-center greedy (default 10)")
        parser.add_argument("--out", default=None, help="folder for al_simulate.json and al_curve.png")

    def handle(self, *args, **o):
        try:
            dataset = Dataset.objects.get(name=o["dataset"])
        except Dataset.DoesNotExist:
            known = ", ".join(Dataset.objects.order_by("name").values_list("name", flat=True)) or "none"
            raise CommandError(f"no dataset named {o['dataset']!r}; known: {known}") from None
        try:
            strategies = check_simulation_strategies(o["strategies"].split(","))
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        for key in ("rounds", "batch", "seeds", "steps", "batch_size", "input_size", "ensemble"):
            if o[key] < 1:
                raise CommandError(f"--{key.replace('_', '-')} must be at least 1, got {o[key]}")
        if o["tta"] == "ensemble" and o["ensemble"] < 2:
            raise CommandError(f"--tta ensemble compares the members of an --ensemble of at least 2 "
                               f"classifiers, got --ensemble {o['ensemble']}")
        initial = o["batch"] if o["initial"] is None else o["initial"]
        if initial < 1:
            raise CommandError(f"--initial must be at least 1, got {initial}")
        try:
            config = ClassifierRunConfig(
                preset=o["preset"], width_multiplier=o["width_multiplier"], dropout=0.2,
                data=DataConfig(input_size=o["input_size"], margin=o["margin"]),
                augment=AugmentConfig(scale=False, random_erasing=False),
                optim=OptimConfig(epochs=1, steps_per_epoch=o["steps"], batch_size=o["batch_size"],
                                  learning_rate=o["learning_rate"], patience=1000),
            )
            if o["tta"] == "ensemble":
                tta = al.members_tta
            else:
                tta = al.augment_tta(al.ORIENTATION_VARIANTS if o["tta"] == "orientations" else al.ALL_VARIANTS)
        except ValueError as exc:
            raise CommandError(str(exc)) from None

        images = list(images_by_id(dataset=dataset))
        truth = truth_for(images)
        images = [im for im in images if truth[im.pk]]
        seeds = list(range(o["seeds"]))
        image_ids = [im.pk for im in images for _ in truth[im.pk]]
        labels = [BETHESDA.index(b.label) for im in images for b, _ in truth[im.pk]]
        if not labels:
            raise CommandError(f"{dataset.name} has no clusters with ground truth")
        try:  # the sizes, before anything is cropped or trained
            al.plan_splits(image_ids, labels, seeds=seeds, test_fraction=o["test_fraction"], initial=initial,
                           rounds=o["rounds"], batch=o["batch"])
        except ValueError as exc:
            raise CommandError(f"{dataset.name}: {exc}") from None
        # the preset is checked last: its module imports TensorFlow (slow, and noisy on stderr)
        from training.networks.resnest.resnest_config import PRESETS

        if o["preset"] not in PRESETS:
            raise CommandError(f"unknown preset {o['preset']!r}; have: {', '.join(PRESETS)}")

        started = time.monotonic()
        self.stdout.write(f"{dataset.name}: cropping {len(labels)} clusters from {len(images)} images "
                          f"at {o['input_size']} px")
        clusters = al.ClusterSet.from_crops(image_crops(images, input_size=o["input_size"], margin=o["margin"]))
        trainings = len(seeds) * (1 + len(strategies) * o["rounds"]) * o["ensemble"]
        self.stdout.write(
            f"{len(strategies)} strategies x {len(seeds)} seeds, {o['rounds']} rounds of {o['batch']} from "
            f"{initial} initial labels; {trainings} trainings of {o['steps']} steps x {o['batch_size']}, "
            f"preset {o['preset']}" + (f", an ensemble of {o['ensemble']} per round" if o["ensemble"] > 1 else "")
        )

        def progress(line: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:6.0f} s] {line}")

        with tempfile.TemporaryDirectory(prefix="al-simulate-") as work:
            try:
                result = al.simulate(
                    clusters, strategies, train=al.ensemble_trainer(al.keras_trainer(config, work), o["ensemble"]),
                    rounds=o["rounds"],
                    batch=o["batch"], seeds=seeds, initial=initial, test_fraction=o["test_fraction"],
                    tta=tta, pool_factor=o["pool_factor"], progress=progress,
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        summary = al.summarize(result)
        efficiency = al.label_efficiency(summary, result=result)
        table = al.format_table(summary)
        self.stdout.write("")
        self.stdout.write(f"test macro-F1 (%), mean +- sd over seeds {seeds}, against labels used:")
        self.stdout.write("")
        self.stdout.write(table)
        self.stdout.write("")
        self.stdout.write(al.format_efficiency(efficiency))
        for split in result.splits:
            self.stdout.write(f"seed {split['seed']}: pool {split['pool_clusters']} clusters "
                              f"({split['pool_images']} images), test {split['test_clusters']} clusters "
                              f"({split['test_images']} images)")
        for name in strategies:
            final = [sum(c.class_counts[-1][k] for c in result.curves[name]) for k in range(len(BETHESDA))]
            self.stdout.write(f"{name}: final labelled sets, summed over seeds: {al.format_counts(final)}")
        elapsed = time.monotonic() - started
        self.stdout.write(f"took {elapsed:.0f} s")
        if o["out"]:
            out = Path(o["out"])
            out.mkdir(parents=True, exist_ok=True)
            saved = {
                "dataset": dataset.name,
                "options": {k: o[k] for k in ("strategies", "rounds", "batch", "seeds", "test_fraction", "preset",
                                              "input_size", "margin", "steps", "batch_size", "learning_rate",
                                              "tta", "pool_factor", "ensemble")} | {"initial": initial},
                "config": config.to_json(),
                "summary": summary,
                "efficiency": efficiency.to_json() if efficiency else None,
                "elapsed_s": round(elapsed, 1),
                **result.to_json(),
            }
            (out / "al_simulate.json").write_text(json.dumps(saved, indent=1))
            al.plot_curves(summary, out / "al_curve.png", efficiency=efficiency,
                           title=f"Simulated active learning on {dataset.name}, mean +- sd over "
                                 f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}")
            self.stdout.write(f"wrote {out / 'al_simulate.json'} and {out / 'al_curve.png'}")
