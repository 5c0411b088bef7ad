"""Platform-level tasks: liveness pings used by /healthz and the worker checks."""

from celery import shared_task


@shared_task(name="cytoloop.ping")
def ping() -> str:
    return "pong"


@shared_task(name="cytoloop.ping_gpu")
def ping_gpu() -> str:
    return "pong"


@shared_task(name="cytoloop.send_pending_enqueues", acks_late=False)
def send_pending_enqueues_task() -> dict:
    """Send the enqueues the broker did not take while it was down (beat, every 30 s)."""
    from cytoloop.jobs import send_pending_enqueues

    return send_pending_enqueues()
