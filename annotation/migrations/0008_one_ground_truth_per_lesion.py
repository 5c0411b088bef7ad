"""Repair ground truth stored before one-current-box-per-lesion: consensus boxes were added beside
the imported ones and each review decision added another copy. Per image, the copies of a lesion
collapse to one current row (the highest precedence, newest: review > consensus > import); the
others are kept as superseded history; boxes left on rejected clusters are retired. Nothing is
deleted, so the reverse step has nothing to undo."""

from django.conf import settings
from django.db import migrations


def repair(apps, schema_editor):
    from annotation.ground_truth import repair_duplicates

    repair_duplicates(apps.get_model("annotation", "GroundTruthBox"), apps.get_model("annotation", "Cluster"),
                      threshold=settings.CONSENSUS_IOU_THRESHOLD)


class Migration(migrations.Migration):

    dependencies = [
        ("annotation", "0007_ground_truth_history_revisions_drafts_model_help"),
    ]

    operations = [
        migrations.RunPython(repair, migrations.RunPython.noop),
    ]
