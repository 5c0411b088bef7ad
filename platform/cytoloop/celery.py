"""The Celery app. Configuration comes from Django settings (CELERY_* names).

Start a worker with `python manage.py worker` (see its --help), which consumes both queues
on one machine; GPU hosts run `python manage.py worker --queues gpu --pool solo`.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cytoloop.settings.local")

app = Celery("cytoloop")
app.config_from_object("django.conf:settings", namespace="CELERY")
# one scheduler per deployment, even after a SIGKILLed `worker --beat` (cytoloop.beat_lock)
app.conf.beat_scheduler = "cytoloop.beat_lock:LockedScheduler"
app.autodiscover_tasks()
