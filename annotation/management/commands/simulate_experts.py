"""python manage.py simulate_experts DATASET --experts 3 [--seed S]"""

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError
from tqdm import tqdm

from annotation.models import Dataset, Image
from annotation.services import simulate_dataset_experts


class Command(BaseCommand):
    help = (
        "Create blind expert annotations from a dataset's ground truth, with realistic "
        "disagreement: box jitter, missed and spurious clusters, label changes mostly to adjacent "
        "grades, each simulated expert with their own skill and bias (annotation/simulation.py). "
        "Simulated experts are pathologist accounts that cannot log in "
        "(sim-expertN@cytoloop.local). Deterministic for a seed; running again replaces their "
        "annotations. An image a pathologist holds right now is skipped (and reported); run "
        "again later to fill it in."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="dataset name")
        parser.add_argument("--experts", type=int, default=3, help="how many experts (default 3)")
        parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    def handle(self, *args, dataset, experts, seed, **options):
        if experts < 1 or seed < 0:
            raise CommandError("--experts must be at least 1 and --seed not negative")
        try:
            result = self._simulate(dataset, experts, seed)
        except DatabaseError as exc:  # e.g. the database is gone or not migrated: one line, no traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(f"simulate_experts stopped: database error: {first} "
                               "(images finished before it are kept; run again to finish)") from None
        for name, counts in result["experts"].items():
            self.stdout.write(
                f"{name}: {counts['annotations']} annotations, {counts['boxes']} boxes "
                f"(profile: {counts['profile']})"
            )
        held = result["held"]
        if held:
            shown = ", ".join(str(i) for i in held[:20]) + (" ..." if len(held) > 20 else "")
            self.stdout.write(
                f"skipped {len(held)} image(s) a pathologist is holding now (ids {shown}); "
                "run again once they are submitted or released"
            )

    def _simulate(self, dataset: str, experts: int, seed: int) -> dict:
        try:
            ds = Dataset.objects.get(name=dataset)
        except Dataset.DoesNotExist:
            raise CommandError(f"no dataset named {dataset!r}") from None
        n_images = Image.objects.filter(dataset=ds).count()
        if not n_images:
            raise CommandError(f"dataset {dataset} has no images")
        with tqdm(total=n_images, unit="image", desc="simulating", disable=None) as bar:
            return simulate_dataset_experts(
                dataset=ds, n_experts=experts, seed=seed, progress=lambda done, total: bar.update(1)
            )
