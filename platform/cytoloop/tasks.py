"""Platform-level tasks: liveness pings used by /healthz and the worker checks."""

from celery import shared_task


@shared_task(name="cytoloop.ping")
def ping() -> str:
    return "pong"


@shared_task(name="cytoloop.ping_gpu")
def ping_gpu() -> str:
    return "pong"
