"""python manage.py import_images PATH --dataset NAME [--annotations FILE]"""

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.formats import FormatError
from annotation.services import ensure_dataset, import_images
from annotation.validation import ImageRejected, Limits


class Command(BaseCommand):
    help = (
        "Import a folder, a .zip or one image (PNG, JPEG, TIFF) into a dataset. Every file is "
        "checked (not an image, truncated or corrupt, empty, over the pixel or size limit, "
        "unsupported mode, duplicate, unsafe name); each bad file is skipped with a line saying "
        "why and the good ones go in. Annotations (COCO JSON, YOLO label folder, Label Studio JSON "
        "export, CRIC annotations.json or classifications.csv) become ground truth, or predictions "
        "with --as-predictions. CRIC nucleus points become boxes centred on them."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="a folder (searched recursively), a .zip file, or one image")
        parser.add_argument("--dataset", required=True, help="dataset name (a slug); created if missing")
        parser.add_argument(
            "--annotations",
            help="annotation file or YOLO label folder; format detected from its content",
        )
        parser.add_argument(
            "--as-predictions", action="store_true",
            help="store the annotations as model predictions instead of ground truth",
        )
        parser.add_argument("--model-version", default="imported",
                            help="model version recorded on imported predictions (default: imported)")
        parser.add_argument(
            "--box-size", type=float, default=100.0,
            help="side in pixels of the box made around each CRIC nucleus point, at the official "
                 "1376 px frame width; scaled with the image (default: 100)",
        )
        parser.add_argument("--max-pixels", type=int, default=Limits.max_pixels,
                            help="refuse images with more pixels (decompression bombs; default %(default)s)")
        parser.add_argument("--max-mb", type=float, default=Limits.max_bytes / 2**20,
                            help="refuse files larger than this many MiB (default %(default)s)")
        parser.add_argument("--title", default="", help="dataset title (for a new dataset)")
        parser.add_argument("--source", default="", help="where the images come from (shown on the dataset page)")
        parser.add_argument("--license", default="", help="the images' licence (shown on the dataset page)")
        parser.add_argument("--citation", default="", help="how to cite the images")

    def handle(self, *args, **o):
        path = Path(o["path"])
        if not path.exists():
            raise CommandError(f"{path}: no such file or folder")
        annotations = Path(o["annotations"]) if o["annotations"] else None
        if annotations is not None and not annotations.exists():
            raise CommandError(f"{annotations}: no such annotation file or folder")
        if o["box_size"] <= 0 or o["max_pixels"] <= 0 or o["max_mb"] <= 0:
            raise CommandError("--box-size, --max-pixels and --max-mb must be positive")
        extra = {k: o[k] for k in ("title", "source", "license", "citation") if o[k]}
        try:
            dataset, created = ensure_dataset(name=o["dataset"], **extra)
        except ValidationError:
            raise CommandError(
                f"dataset name {o['dataset']!r} must be a slug: letters, digits, - and _"
            ) from None
        if created:
            self.stdout.write(f"created dataset {dataset.name}")

        limits = Limits(max_bytes=int(o["max_mb"] * 2**20), max_pixels=o["max_pixels"])
        bar = tqdm(total=0, unit="file", desc="importing", disable=None)

        def progress(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        def on_skip(item):
            bar.write(f"skipped {item.message}")

        try:
            report = import_images(
                dataset=dataset, path=path, annotations=annotations,
                as_predictions=o["as_predictions"], model_version=o["model_version"],
                limits=limits, box_size=o["box_size"], progress=progress, on_skip=on_skip,
            )
        except FormatError as exc:
            raise CommandError(f"annotations not imported, nothing written: {exc}") from None
        except ImageRejected as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
        for line in report.box_problems:
            self.stdout.write(line)
        for name in report.unmatched_annotations:
            self.stdout.write(f"annotations for {name}: no such image in {path}")
        self.stdout.write(report.summary())
