"""Simulated experts: blind annotations from ground truth, through the path real ones take."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import Assignment, Dataset, ExpertAnnotation, Image
from annotation.services.common import Progress
from annotation.services.queue import release_expired_assignments
from annotation.services.submissions import submit_annotation
from annotation.simulation import default_panel, simulate_panel
from cytoloop.roles import Role, set_roles


def simulated_expert_user(name: str):
    """The account of a simulated expert: a pathologist who cannot log in."""
    email = f"sim-{name}@cytoloop.local"
    user, created = get_user_model().objects.get_or_create(
        username=email, defaults={"email": email, "first_name": f"Simulated {name}"}
    )
    if created:
        user.set_unusable_password()
        user.save()
        set_roles(user, [Role.PATHOLOGIST])
    return user


class ImageHeld(Exception):
    """Someone else (a pathologist) holds the image now."""


def _hold_for(image: Image, user) -> None:
    """Hand ``image`` to a simulated expert the way next_assignment would; ImageHeld if a person
    holds it (the one-active-assignment constraint), nothing written then."""
    try:
        with transaction.atomic():
            Assignment.objects.update_or_create(
                image=image, annotator=user,
                defaults={"status": Assignment.Status.ACTIVE, "expires_at": timezone.now() + timedelta(minutes=5),
                          "finished_at": None},
            )
    except IntegrityError:
        raise ImageHeld(f"image {image.pk} is held by someone else") from None


def simulate_dataset_experts(*, dataset: Dataset, n_experts: int, seed: int, progress: Progress | None = None) -> dict:
    """Simulated blind annotations for every image of ``dataset`` from its ground truth.

    Each image's annotations go through ``submit_annotation`` (the path real ones take), all of
    one image's experts in one transaction; deterministic for (seed, image checksum, expert).
    An image a pathologist holds now is skipped whole (their work is never raced or outvoted
    half-way) and listed under ``held``; running again later fills it in. Returns
    ``{"experts": {name: {"annotations", "boxes", "profile"}}, "held": [image ids]}``."""
    panel = default_panel(n_experts, seed)
    users = {p.name: simulated_expert_user(p.name) for p in panel}
    summary = {p.name: {"annotations": 0, "boxes": 0, "profile": p.role or "expert"} for p in panel}
    held: list[int] = []
    release_expired_assignments()
    images = list(Image.objects.filter(dataset=dataset).order_by("pk").prefetch_related("ground_truth"))
    sim_ids = [u.pk for u in users.values()]
    for done, image in enumerate(images, start=1):
        truth = [b.as_box() for b in image.ground_truth.all()]
        panel_boxes = simulate_panel(truth, image.width, image.height, panel, seed, image.checksum)
        if Assignment.objects.filter(image=image, status=Assignment.Status.ACTIVE).exclude(
                annotator__in=sim_ids).exists():
            held.append(image.pk)
        else:
            try:
                # the path real annotations take: an assignment, then submit (outbox to Label
                # Studio, consensus once the image has its N annotations)
                with transaction.atomic():
                    for name, boxes in panel_boxes.items():
                        _hold_for(image, users[name])
                        submit_annotation(image=image, annotator=users[name], boxes=boxes,
                                          origin=ExpertAnnotation.Origin.SIMULATED)
            except ImageHeld:  # a pathologist took it between the check and the hold
                held.append(image.pk)
            else:
                for name, boxes in panel_boxes.items():
                    summary[name]["annotations"] += 1
                    summary[name]["boxes"] += len(boxes)
        if progress:
            progress(done, len(images))
    return {"experts": summary, "held": held}
