"""python manage.py make_synthetic OUT --images N [--seed S] [--size 1636x1088] [--grade-mix W,W,W,W,W,W]"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotation.bethesda import BETHESDA

MIN_SIDE = 128
_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """'1636x1088' -> (1636, 1088); CommandError with one clear line otherwise."""
    match = _SIZE.match(text or "")
    if not match:
        raise CommandError(f"--size must look like WIDTHxHEIGHT (e.g. 1636x1088), got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width < MIN_SIDE or height < MIN_SIDE:
        raise CommandError(
            f"--size must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {width}x{height}"
        )
    return width, height


def parse_grade_mix(text: str | None) -> tuple[float, ...] | None:
    """'0.57,0.09,0.15,0.04,0.12,0.03' -> six weights in BETHESDA order; None keeps the default."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    try:
        weights = tuple(float(part) for part in parts)
    except ValueError:
        raise CommandError(f"--grade-mix must be {len(BETHESDA)} numbers separated by commas "
                           f"({', '.join(BETHESDA)}), got {text!r}") from None
    if len(weights) != len(BETHESDA):
        raise CommandError(f"--grade-mix needs {len(BETHESDA)} weights ({', '.join(BETHESDA)}), "
                           f"got {len(weights)}")
    if not all(math.isfinite(w) and w >= 0.0 for w in weights) or sum(weights) <= 0.0:
        raise CommandError(f"--grade-mix weights must be finite, not negative and not all zero, got {text!r}")
    return weights


class Command(BaseCommand):
    help = (
        "Generate synthetic liquid-based Pap images (procedural, annotation/synthetic/) with one "
        "Bethesda-labelled box per cell cluster: writes OUT/images/synth_00000.png ... and "
        "OUT/annotations.json (COCO). Grades look as pathologists describe them (nuclear "
        "enlargement, N:C ratio and hyperchromasia rising from NILM to HSIL, koilocytes in LSIL, "
        "keratinised pleomorphic cells in SCC) with overlap between adjacent grades, and each "
        "image varies in focus, stain and exposure. Deterministic for a seed: the same command "
        "writes the same bytes. Import the result with `import_images OUT --dataset NAME "
        "--annotations OUT/annotations.json`."
    )

    def add_arguments(self, parser):
        parser.add_argument("out", help="output folder (created if missing); images go to OUT/images/")
        parser.add_argument("--images", type=int, required=True,
                            help="how many images to generate (at least 1)")
        parser.add_argument("--seed", type=int, default=0,
                            help="dataset seed (not negative); image i uses a seed derived from "
                                 "(seed, i), so a larger run starts with the smaller one's "
                                 "images (default 0)")
        parser.add_argument("--size", default="1636x1088",
                            help=f"image size WIDTHxHEIGHT in pixels, each at least {MIN_SIDE} "
                                 "(default 1636x1088, the paper's frames); cells keep their "
                                 "pixel size, so smaller images hold fewer clusters")
        parser.add_argument("--grade-mix", default=None, metavar="W,W,W,W,W,W",
                            help=f"relative frequency of each grade among clusters, in the order "
                                 f"{', '.join(BETHESDA)} (normalised; default 0.2 NILM and 0.16 "
                                 "each other grade). Real smears are mostly NILM: cric-dev's cells "
                                 "are about 0.57,0.09,0.15,0.04,0.12,0.03")

    def handle(self, *args, out, images, seed, size, grade_mix=None, **options):
        from annotation.formats import write_coco
        from annotation.synthetic import SyntheticConfig, generate_dataset

        if images < 1:
            raise CommandError(f"--images must be at least 1, got {images}")
        if seed < 0:
            raise CommandError(f"--seed must not be negative, got {seed}")
        width, height = parse_size(size)
        mix = parse_grade_mix(grade_mix)
        out_dir = Path(out)
        if out_dir.exists() and not out_dir.is_dir():
            raise CommandError(f"{out_dir}: exists and is not a folder")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"{out_dir}: cannot create the folder ({exc.strerror})") from None

        config = SyntheticConfig(width=width, height=height)
        if mix is not None:
            config = config.replace(grade_mix=mix)
        start = time.perf_counter()
        with tqdm(total=images, unit="image", desc="generating", disable=None) as bar:
            try:
                records = generate_dataset(
                    out_dir, images, seed=seed, config=config,
                    progress=lambda done, total: bar.update(1),
                )
            except OSError as exc:
                raise CommandError(f"cannot write images under {out_dir}: {exc}") from None
        elapsed = time.perf_counter() - start
        annotations = out_dir / "annotations.json"
        write_coco(records, annotations)

        per_grade = Counter(box.label for record in records for box in record.boxes)
        grades = ", ".join(f"{name} {per_grade.get(name, 0)}" for name in BETHESDA)
        self.stdout.write(
            f"wrote {len(records)} images ({width}x{height}) to {out_dir / 'images'} "
            f"and {annotations}"
        )
        self.stdout.write(f"clusters: {sum(per_grade.values())} ({grades})")
        self.stdout.write(f"{elapsed / len(records):.2f} s per image")
