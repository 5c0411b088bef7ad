"""What several services share: their refusals and the progress callback."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]

class StaleAnnotation(Exception):
    """A save from an editor opened on an older revision than the one saved now (Back, a second
    tab, another device): nothing was written. ``annotation`` is what is saved now (or None)."""

    def __init__(self, *, annotation, seen: int):
        self.annotation = annotation
        self.seen = seen
        self.revision = annotation.revision if annotation is not None else 0
        super().__init__(
            f"This image was saved elsewhere since you opened it (revision {self.revision}); "
            "reloaded what is saved now."
        )


class NotAssigned(Exception):
    """The image is not assigned to this annotator (or the assignment was released)."""


class AnnotationRejected(ValueError):
    """Submitted boxes that cannot be stored; ``errors`` lists what is wrong with each."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors
