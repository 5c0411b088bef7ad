"""python manage.py worker: a Celery worker for this platform."""

from django.core.management.base import BaseCommand

from cytoloop.queues import Queue


class Command(BaseCommand):
    help = (
        "Start a Celery worker. By default it consumes both queues (default and gpu), as one "
        "machine needs. GPU hosts: --queues gpu --pool solo, one worker per GPU "
        "(CUDA_VISIBLE_DEVICES). TensorFlow and fork do not mix, so gpu workers use the solo pool."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--queues",
            default=",".join(q.value for q in Queue),
            help="comma-separated queues to consume (default: %(default)s)",
        )
        parser.add_argument(
            "--pool",
            default="solo",
            choices=["solo", "prefork", "threads"],
            help="execution pool (default: %(default)s; solo is safe with TensorFlow)",
        )
        parser.add_argument("--concurrency", type=int, default=1, help="processes/threads (default 1)")
        parser.add_argument("--loglevel", default="INFO", help="log level (default INFO)")
        parser.add_argument("--hostname", default=None, help="worker node name (default celery@HOST)")
        parser.add_argument(
            "--beat", action="store_true",
            help="also run the periodic scheduler (Label Studio outbox flush and reconcile); "
                 "one scheduler sends at a time (a lock; others wait), and it exits with its worker, "
                 "even a SIGKILLed one (cytoloop.beat_lock)",
        )

    def handle(self, *args, queues, pool, concurrency, loglevel, hostname, beat, **options):
        from cytoloop.celery import app

        argv = [
            "worker",
            f"--queues={queues}",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            f"--loglevel={loglevel}",
            "--without-gossip",
            "--without-mingle",
        ]
        if hostname:
            argv.append(f"--hostname={hostname}")
        if beat:
            from django.conf import settings

            argv += ["--beat", f"--schedule={settings.CELERY_BEAT_SCHEDULE_FILENAME}"]
        app.worker_main(argv)
