"""What a user may see of an image now: the one access rule behind every page, API endpoint,
thumbnail and editor payload that can show boxes (issue 12, "blind everywhere").

The rule (docs/USAGE.md, "Blind"):

1. A user without a role sees nothing of any image (``may_open`` is False: pages answer 403,
   the API 404, the same as for an image that does not exist).
2. A *pending vote* comes first, whatever other roles the user holds. A user has one on an
   image when they hold it (an active assignment: the image is open in their editor, including
   an extra expert a reviewer asked for), or when it may still come to them: they are a
   pathologist, have neither submitted nor skipped it, and it still lacks votes (fewer
   annotations than the dataset's experts per image plus the extra experts asked for). With a
   pending vote a user sees their own boxes only: never the ground truth (imported, consensus or
   reviewed), other experts' boxes or logins, or the consensus. Model predictions only as
   offered to annotators: the boxes of ``image.preannotation_model`` (written by inference on
   the images an active ranking round selected when it allows pre-annotations), or every
   prediction when the setting ANNOTATE_SHOW_PREDICTIONS is on. An extra expert asked for by a
   reviewer (the others disagreed) gets no model help at all.
3. A reviewer or an admin without a pending vote sees everything.
4. A pathologist without a pending vote sees their own boxes and the predictions offered as in
   2, and everything else (other experts' boxes, ground truth, every prediction, consensus) only
   once the image's consensus exists AND they gave a vote on it. A pathologist who never voted on
   an image stays blind to it, since a reviewer may still ask them as an extra expert.

``image_view`` answers for one image, ``image_views`` for many in one query; every reader of
boxes goes through them (or through the readers below, which do). A forbidden object and a
missing one look the same from outside: ``image_or_404`` raises the same Http404 for both, and a
list the rule hides is empty, as if there were nothing to show.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404

from annotation.models import (
    Assignment,
    Cluster,
    ExpertAnnotation,
    GroundTruthBox,
    Image,
    PredictionBox,
)
from cytoloop.roles import Role, user_roles


@dataclass(frozen=True)
class ImageView:
    """What one user may see of one image now (see the module docstring for the rule)."""

    may_open: bool
    own_boxes: bool
    others_boxes: bool
    ground_truth: bool
    predictions: bool
    consensus: bool
    #: with ``predictions``: only this model_version's boxes ("" = every model's)
    prediction_model: str = ""
    #: the editor may pre-fill the expert's work with those predictions (offered, not merely seen)
    preannotations: bool = False
    pending_vote: bool = False
    #: why, in words, for the page to say (empty when everything is shown)
    why: str = ""


NOTHING = ImageView(may_open=False, own_boxes=False, others_boxes=False, ground_truth=False, predictions=False,
                    consensus=False, why="You hold no role in CytoLoop.")


@dataclass(frozen=True)
class _Facts:
    """What the rule needs to know about one image and one user."""

    consensus: bool
    preannotation_model: str
    votes: int
    needed: int
    held: bool
    held_extra: bool
    voted: bool
    closed: bool  # submitted or skipped by this user


def _decide(roles: frozenset, facts: _Facts, show_all_predictions: bool) -> ImageView:
    if not roles:
        return NOTHING
    pathologist = Role.PATHOLOGIST in roles
    may_yet_vote = pathologist and not facts.voted and not facts.closed and facts.votes < facts.needed
    pending = facts.held or may_yet_vote
    offered = not facts.held_extra and (bool(facts.preannotation_model) or show_all_predictions)
    blind = dict(may_open=True, own_boxes=True, others_boxes=False, ground_truth=False, consensus=False,
                 predictions=offered, prediction_model=facts.preannotation_model if offered else "",
                 preannotations=offered, pending_vote=pending)
    if pending:
        why = ("You are annotating this image" if facts.held else "This image may still come to your queue")
        why += (": until you have given your vote and its consensus exists, you see only your own boxes"
                + (" and the model's suggestions." if offered else "; no ground truth, other experts' work or model boxes."))
        return ImageView(**blind, why=why)
    if roles & {Role.REVIEWER, Role.ADMIN}:
        return ImageView(may_open=True, own_boxes=True, others_boxes=True, ground_truth=True, predictions=True,
                         consensus=True, preannotations=offered, prediction_model="")
    if facts.consensus and facts.voted:
        return ImageView(may_open=True, own_boxes=True, others_boxes=True, ground_truth=True, predictions=True,
                         consensus=True, preannotations=offered, prediction_model="")
    why = ("Ground truth, other experts' work and the model's boxes are shown to you once you have voted on this "
           "image and its consensus exists." if not facts.voted else
           "You have voted on this image; its ground truth, the other experts' work and the model's boxes are shown "
           "once its consensus exists.")
    return ImageView(**{**blind, "pending_vote": False}, why=why)


def _facts_rows(user, images: QuerySet[Image]):
    votes = (ExpertAnnotation.objects.filter(image=OuterRef("pk")).order_by().values("image")
             .annotate(n=Count("id")).values("n"))
    extra = (Assignment.objects.filter(image=OuterRef("pk"), extra=True).order_by().values("image")
             .annotate(n=Count("id")).values("n"))
    mine = Assignment.objects.filter(image=OuterRef("pk"), annotator=user)
    active = mine.filter(status=Assignment.Status.ACTIVE)
    rows = images.order_by().annotate(
        _votes=Coalesce(Subquery(votes), Value(0)),
        _extra=Coalesce(Subquery(extra), Value(0)),
        _held=Exists(active),
        _held_extra=Exists(active.filter(extra=True)),
        _voted=Exists(ExpertAnnotation.objects.filter(image=OuterRef("pk"), annotator=user)),
        _closed=Exists(mine.filter(status__in=[Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED])),
    ).values_list("pk", "consensus_at", "preannotation_model", "dataset__experts_per_image", "_votes", "_extra",
                  "_held", "_held_extra", "_voted", "_closed")
    for pk, consensus_at, model, per_image, n_votes, n_extra, held, held_extra, voted, closed in rows:
        yield pk, _Facts(consensus=consensus_at is not None, preannotation_model=model or "", votes=n_votes,
                         needed=per_image + n_extra, held=held, held_extra=held_extra, voted=voted, closed=closed)


def image_views(user, images) -> dict[int, ImageView]:
    """{image id: ImageView} for ``images`` (a QuerySet or a list of Image), in one query."""
    roles = user_roles(user)
    if not isinstance(images, QuerySet):
        images = Image.objects.filter(pk__in=[i.pk for i in images])
    if not roles:
        return {pk: NOTHING for pk in images.values_list("pk", flat=True)}
    show_all = bool(getattr(settings, "ANNOTATE_SHOW_PREDICTIONS", False))
    return {pk: _decide(roles, facts, show_all) for pk, facts in _facts_rows(user, images)}


def image_view(user, image: Image) -> ImageView:
    """What ``user`` may see of ``image`` now: the one rule (module docstring)."""
    return image_views(user, Image.objects.filter(pk=image.pk)).get(image.pk, NOTHING)


def image_or_404(user, pk: int, queryset: QuerySet[Image] | None = None) -> tuple[Image, ImageView]:
    """The image and what the user may see of it; Http404, the same for a missing image and for
    one the user may not open."""
    image = (queryset if queryset is not None else Image.objects.all()).filter(pk=pk).first()
    if image is None:
        raise Http404("no such image")
    view = image_view(user, image)
    if not view.may_open:
        raise Http404("no such image")
    return image, view


def sees_everything(user) -> bool:
    """True when no image hides anything from ``user`` (a reviewer or admin holding no image and
    who is no pathologist): list pages may then skip the per-image rule."""
    roles = user_roles(user)
    return (bool(roles & {Role.REVIEWER, Role.ADMIN}) and Role.PATHOLOGIST not in roles
            and not Assignment.objects.filter(annotator=user, status=Assignment.Status.ACTIVE).exists())


def images_with_ground_truth_shown(user, images: QuerySet[Image]) -> QuerySet[Image]:
    """``images`` narrowed to those whose ground truth ``user`` may see (for counts and filters)."""
    if sees_everything(user):
        return images
    shown = [pk for pk, view in image_views(user, images).items() if view.ground_truth]
    return images.filter(pk__in=shown)


# --- the readers of boxes: each asks the rule first ---------------------------------------------


def ground_truth(view: ImageView, image: Image) -> QuerySet[GroundTruthBox]:
    rows = GroundTruthBox.objects.filter(image=image).order_by("id")
    return rows if view.ground_truth else rows.none()


def predictions(view: ImageView, image: Image) -> QuerySet[PredictionBox]:
    rows = PredictionBox.objects.filter(image=image).order_by("-score", "id")
    if not view.predictions:
        return rows.none()
    return rows.filter(model_version=view.prediction_model) if view.prediction_model else rows


def preannotations(view: ImageView, image: Image) -> QuerySet[PredictionBox]:
    """The model boxes the editor may pre-fill: those offered to annotators (rule 2), never more."""
    rows = PredictionBox.objects.filter(image=image).order_by("-score", "id")
    if not view.preannotations:
        return rows.none()
    model = image.preannotation_model
    return rows.filter(model_version=model) if model else rows


def annotations(user, view: ImageView, image: Image) -> QuerySet[ExpertAnnotation]:
    rows = ExpertAnnotation.objects.filter(image=image).select_related("annotator").prefetch_related("boxes")
    if view.others_boxes:
        return rows
    return rows.filter(annotator=user) if view.own_boxes else rows.none()


def clusters(view: ImageView, image: Image) -> QuerySet[Cluster]:
    rows = Cluster.objects.filter(image=image).order_by("id")
    return rows if view.consensus else rows.none()
