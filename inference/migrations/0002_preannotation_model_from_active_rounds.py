"""Image.preannotation_model (annotation 0007) for rounds started before it existed: the images
each active round that allows pre-annotations selected name its models, as start_ranking_round
now writes them (the editor reads only that field)."""

from django.db import migrations


def name_active_rounds_models(apps, schema_editor):
    RankingRound = apps.get_model("inference", "RankingRound")
    RankedImage = apps.get_model("inference", "RankedImage")
    Image = apps.get_model("annotation", "Image")
    rounds = RankingRound.objects.filter(active=True, allow_preannotations=True).select_related(
        "detector_version", "classifier_version")
    for round_ in rounds:
        selected = RankedImage.objects.filter(round=round_, selected=True).values("image_id")
        Image.objects.filter(pk__in=selected, preannotation_model="").update(
            preannotation_model=f"{round_.detector_version.name}+{round_.classifier_version.name}")


class Migration(migrations.Migration):
    dependencies = [
        ("inference", "0001_initial"),
        ("annotation", "0007_ground_truth_history_revisions_drafts_model_help"),
    ]

    operations = [migrations.RunPython(name_active_rounds_models, migrations.RunPython.noop)]
