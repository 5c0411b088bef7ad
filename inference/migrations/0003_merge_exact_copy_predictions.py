"""Remove the exact copies earlier prediction jobs stored (inference.repair)."""

from django.db import migrations


def merge(apps, schema_editor):
    from inference.repair import merge_exact_copies

    merge_exact_copies(PredictionBox=apps.get_model("annotation", "PredictionBox"),
                       ClusterPrediction=apps.get_model("inference", "ClusterPrediction"),
                       ExpertBox=apps.get_model("annotation", "ExpertBox"),
                       RankedImage=apps.get_model("inference", "RankedImage"))


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0002_preannotation_model_from_active_rounds"),
        ("annotation", "0007_ground_truth_history_revisions_drafts_model_help"),
    ]

    operations = [migrations.RunPython(merge, migrations.RunPython.noop)]
