"""Consensus recompute of a 10,000-image dataset on PostgreSQL (target: within 60 s).

Builds a dataset of 10,000 images x 3 experts x 20 boxes (600,000 expert boxes, written with
COPY) in its own database (cytoloop_bench on the local PostgreSQL, or BENCH_DATABASE_URL), then
times ``recompute_dataset(force=True)``: two queries and bulk writes per chunk. Baseline,
measured in the same run: ``compute_consensus`` image by image (one transaction and a few
queries each) on a sample, as images/s. The scenes are bench_consensus's (jitter, misses,
adjacent relabels). Run: .venv/bin/python -m bench.bench_consensus_db
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cytoloop_bench")
os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
os.environ.pop("REDIS_URL", None)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cytoloop.settings.local")
os.environ.setdefault("CYTOLOOP_VAR_DIR", str(ROOT / "var" / "bench-consensus"))

N_IMAGES = int(os.environ.get("BENCH_IMAGES", "10000"))
SAMPLE = 200


def _create_database(url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg2

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    conn = psycopg2.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username,
                            password=parts.password, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS %s" % name)  # noqa: UP031 (identifier, not a value)
        cur.execute("CREATE DATABASE %s" % name)  # noqa: UP031
    conn.close()


def _populate(dataset, experts) -> None:
    from django.db import connection, transaction

    from annotation.geometry import clip_box
    from annotation.models import ExpertAnnotation, Image
    from bench.bench_consensus import make_image

    images = [Image(dataset=dataset, file=f"bench/{i}.png", original_name=f"{i:05d}.png", width=1636,
                    height=1088, format="PNG", checksum=f"{i:064x}", source="synthetic")
              for i in range(N_IMAGES)]
    with transaction.atomic():
        Image.objects.bulk_create(images, batch_size=5000)
        ids = list(Image.objects.filter(dataset=dataset).order_by("id").values_list("id", flat=True))
        annotations = [ExpertAnnotation(image_id=image_id, annotator=user, origin="simulated")
                       for image_id in ids for user in experts]
        ExpertAnnotation.objects.bulk_create(annotations, batch_size=5000)
        ann_ids = {(a, u): pk for pk, a, u in ExpertAnnotation.objects.filter(image__dataset=dataset)
                   .values_list("id", "image_id", "annotator_id")}
        buffer = io.StringIO()
        for n, image_id in enumerate(ids):
            scene = make_image(n)
            for user, boxes in zip(experts, scene.values(), strict=True):
                ann = ann_ids[(image_id, user.pk)]
                for b in filter(None, (clip_box(b, 1636, 1088) for b in boxes)):
                    buffer.write(f"{ann}\t{b.x!r}\t{b.y!r}\t{b.width!r}\t{b.height!r}\t{b.label}\t\n")
        buffer.seek(0)
        with connection.cursor() as cursor:
            cursor.cursor.copy_expert(
                "COPY annotation_expertbox (annotation_id, x, y, width, height, label, prediction_model) FROM STDIN",
                buffer)


def main() -> int:
    _create_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from annotation.models import Cluster, ExpertBox, Image
    from annotation.services import compute_consensus, ensure_dataset, recompute_dataset
    from bench.common import report

    call_command("migrate", verbosity=0)
    dataset, _ = ensure_dataset(name="bench", experts_per_image=3)
    experts = [get_user_model().objects.create(username=f"bench{i}@example.org") for i in range(3)]
    start = time.perf_counter()
    _populate(dataset, experts)
    print(f"populated {N_IMAGES} images, {ExpertBox.objects.count()} expert boxes in "
          f"{time.perf_counter() - start:.1f} s")

    start = time.perf_counter()
    stats = recompute_dataset(dataset=dataset, force=True)
    bulk_seconds = time.perf_counter() - start
    n_clusters = Cluster.objects.count()
    print(f"recompute_dataset: {stats['computed']} images, {n_clusters} clusters in {bulk_seconds:.1f} s "
          f"(target: 60 s for 10,000 images)")

    sample = list(Image.objects.filter(dataset=dataset).select_related("dataset").order_by("id")[:SAMPLE])
    start = time.perf_counter()
    for image in sample:
        compute_consensus(image=image, force=True)
    per_image_rate = len(sample) / (time.perf_counter() - start)
    report(
        "consensus_recompute_10k_images_seconds", value=bulk_seconds, unit="s",
        baseline="compute_consensus image by image, extrapolated from a sample",
        baseline_value=N_IMAGES / per_image_rate, higher_is_better=False,
        config={"images": N_IMAGES, "experts": 3, "boxes_per_expert": 20, "clusters": n_clusters,
                "sample": SAMPLE, "database": "postgresql"},
    )
    report(
        "consensus_recompute_images_per_s", value=stats["computed"] / bulk_seconds, unit="images/s",
        baseline="compute_consensus image by image", baseline_value=per_image_rate,
        config={"images": N_IMAGES},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
