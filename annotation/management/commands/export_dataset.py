"""python manage.py export_dataset NAME OUT --format coco|yolo|labelstudio"""

from django.core.management.base import BaseCommand, CommandError

from annotation.models import Dataset
from annotation.services import export_dataset


class Command(BaseCommand):
    help = (
        "Export a dataset's ground truth as COCO JSON (OUT/annotations.json), YOLO txt "
        "(OUT/labels/*.txt with classes.txt) or a Label Studio JSON export (OUT/labelstudio.json), "
        "with the image files beside it under their imported names, so that "
        "`import_images OUT --annotations ...` brings back exactly the same boxes."
    )

    def add_arguments(self, parser):
        parser.add_argument("dataset", help="dataset name")
        parser.add_argument("out", help="output folder (created if missing)")
        parser.add_argument("--format", required=True, choices=["coco", "yolo", "labelstudio"],
                            help="annotation format")
        parser.add_argument("--no-images", action="store_true", help="write the annotations only")

    def handle(self, *args, dataset, out, format, no_images, **options):
        try:
            ds = Dataset.objects.get(name=dataset)
        except Dataset.DoesNotExist:
            names = ", ".join(Dataset.objects.values_list("name", flat=True)) or "none"
            raise CommandError(f"no dataset named {dataset!r} (datasets: {names})") from None
        target = export_dataset(dataset=ds, out_dir=out, fmt=format, copy_images=not no_images)
        self.stdout.write(f"wrote {target} ({ds.images.count()} images)")
