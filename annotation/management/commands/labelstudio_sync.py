"""python manage.py labelstudio_sync [DATASET ...]"""

from django.core.management.base import BaseCommand, CommandError

from annotation import labelstudio
from annotation.models import Dataset
from annotation.services import reconcile_label_studio


class Command(BaseCommand):
    help = (
        "Make sure every dataset (or those named) has its Label Studio project (Bethesda config, "
        "N experts per image, webhook to this platform) and a task per image; then pull any "
        "annotation the webhook missed and push what the outbox holds. Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("datasets", nargs="*", help="dataset names (default: all)")

    def handle(self, *args, datasets, **options):
        if not labelstudio.is_configured():
            raise CommandError("Label Studio is not configured: set LABEL_STUDIO_URL and LABEL_STUDIO_TOKEN")
        qs = Dataset.objects.all()
        if datasets:
            qs = qs.filter(name__in=datasets)
            missing = set(datasets) - set(qs.values_list("name", flat=True))
            if missing:
                raise CommandError(f"no dataset named {', '.join(sorted(missing))}")
        try:
            for ds in qs:
                created = labelstudio.push_images(ds)
                self.stdout.write(f"{ds.name}: project {ds.ls_project_id}, {created} new task(s)")
                stats = reconcile_label_studio(dataset=ds)
                self.stdout.write(f"{ds.name}: reconciled {stats}")
        except labelstudio.LabelStudioUnavailable as exc:
            raise CommandError(str(exc)) from None
