"""python manage.py recompute_consensus DATASET [--force]"""

import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.models import Dataset
from annotation.services import recompute_dataset


class Command(BaseCommand):
    help = (
        "Recompute the consensus of every image of a dataset that has its N expert annotations "
        "(Hungarian matching on 1-IoU, label vote with a quorum; settings CONSENSUS_*). Images "
        "whose annotations did not change are skipped unless --force. Reviewers' decisions stand."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="dataset name")
        parser.add_argument("--force", action="store_true", help="recompute unchanged images too")
        parser.add_argument("--chunk", type=int, default=2000, help="images per transaction (default 2000)")

    def handle(self, *args, dataset, force, chunk, **options):
        try:
            ds = Dataset.objects.get(name=dataset)
        except Dataset.DoesNotExist:
            raise CommandError(f"no dataset named {dataset!r}") from None
        if chunk < 1:
            raise CommandError("--chunk must be at least 1")
        start = time.perf_counter()
        with tqdm(total=0, unit="image", desc="consensus", disable=None) as bar:
            def progress(done, total):
                bar.total = total
                bar.n = done
                bar.refresh()

            stats = recompute_dataset(dataset=ds, force=force, chunk=chunk, progress=progress)
        self.stdout.write(
            f"{ds.name}: {stats['computed']} computed, {stats['unchanged']} unchanged, "
            f"{stats['not_ready']} waiting for annotations, in {time.perf_counter() - start:.1f} s"
        )
