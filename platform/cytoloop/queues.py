"""Celery queue names: the one definition."""

from enum import StrEnum


class Queue(StrEnum):
    DEFAULT = "default"
    #: training and inference; consumed by GPU hosts (or the embedded worker on one machine)
    GPU = "gpu"


#: Task name prefixes routed to the gpu queue; everything else goes to default.
GPU_TASK_PREFIXES = ("training.", "inference.")


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery router: route by task name (tasks carry explicit names)."""
    if name.startswith(GPU_TASK_PREFIXES) or name == "cytoloop.ping_gpu":
        return {"queue": Queue.GPU.value}
    return {"queue": Queue.DEFAULT.value}
