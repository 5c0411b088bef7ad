"""One ground truth per image: which current box a new source replaces, and the precedence.

Every lesion of an image has at most one *current* ``GroundTruthBox``. Its sources, lowest
precedence first (``PRECEDENCE``):

    imported reference  <  consensus of the experts  <  reviewer decision

A box from a later source never sits beside the current box of the same lesion: it supersedes
it. The old row stays as history (``superseded_at`` = when, ``superseded_by`` = the row that
replaced it; a row retired with no successor, by a rejection or by a recompute that no longer
agrees, has ``superseded_at`` and no ``superseded_by``). Nothing is deleted.

Same lesion
    Two boxes are the same lesion when their IoU is at least ``CONSENSUS_IOU_THRESHOLD`` (the
    threshold consensus matches experts' boxes with), or when the old box was made around a
    nucleus point (CRIC imports) and that point lies inside the new box. One new box may
    supersede several old ones (a cluster box around several annotated nuclei, or the duplicates
    an older version left); each old box goes to its best match (highest IoU).

What each source does
    * Import (``add_imported``): a box identical to a current box, or of the same lesion as a
      current box of a higher source or as a rejected cluster, is dropped; one of the same lesion
      as a current imported box but different supersedes it; the rest are new lesions. Boxes of
      one file never supersede each other (they are distinct cells), but exact copies count once.
      So re-importing the same annotations changes nothing.
    * Consensus (``apply_consensus``): the agreed clusters of a computation are one layer that
      replaces the previous computation's layer. A box identical to a current consensus box keeps
      that row; a different one supersedes the consensus box it matches and the imported boxes of
      its lesion; a consensus box the new computation no longer agrees on is retired, and the
      imported box it had replaced becomes current again (the truth is the same as if consensus
      had been computed once on the current annotations). A box of the same lesion as a current
      reviewer decision or a rejected cluster is dropped: a recompute never overrides a reviewer.
    * Reviewer decision (``apply_review``): supersedes every current box of the lesion (matched by
      the decided box, by the cluster's box before the decision, or produced by this cluster),
      whatever its source, including this cluster's earlier decision. Another cluster's decision
      is never touched.
    * Rejection, "not a lesion" (``retire_for_rejection``): retires the lesion's current boxes the
      same way; the rejected cluster then blocks later imports and consensus boxes of that lesion.

Readers (training export, simulated experts, dashboards, Label Studio's ground-truth annotation)
use ``GroundTruthBox.objects`` (current rows only); ``with_history`` is for audit and for this
module. ``repair_duplicates`` collapses the copies older versions stored (migration 0008).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from annotation.bulk import insert_rows
from annotation.geometry import Box, iou
from annotation.models import Cluster, GroundTruthBox

IMPORT, CONSENSUS, REVIEW = "import", "consensus", "review"
#: higher wins: a source never supersedes a current box of a higher one
PRECEDENCE = {IMPORT: 0, CONSENSUS: 1, REVIEW: 2}


def match_threshold() -> float:
    return settings.CONSENSUS_IOU_THRESHOLD


# --- matching (plain values) -----------------------------------------------------------------------


def _geometry(row) -> tuple:
    return (row.x, row.y, row.width, row.height, row.label)


def _box(row) -> Box:
    return Box(row.x, row.y, row.width, row.height, row.label)


def _point_inside(row, box: Box) -> bool:
    px, py = getattr(row, "point_x", None), getattr(row, "point_y", None)
    return px is not None and py is not None and box.x <= px <= box.x2 and box.y <= py <= box.y2


def lesion_overlap(row, box: Box, threshold: float) -> float | None:
    """How well ``box`` covers the lesion of ``row`` (its IoU), or None when it is another
    lesion: IoU below ``threshold`` and, for a box made around a nucleus point, the point
    outside ``box``."""
    value = iou(_box(row), box)
    if value >= threshold or _point_inside(row, box):
        return value
    return None


def best_match(row, candidates: Sequence[tuple[object, Box]], threshold: float):
    """The candidate (its first element) whose box covers ``row``'s lesion best, or None."""
    best, best_value = None, -1.0
    for item, box in candidates:
        value = lesion_overlap(row, box, threshold)
        if value is not None and value > best_value:
            best, best_value = item, value
    return best


def _same_lesion_any(box: Box, rows: Iterable, threshold: float) -> bool:
    return any(lesion_overlap(r, box, threshold) is not None for r in rows)


def _rejected(image_ids) -> dict[int, list[Box]]:
    """The boxes of rejected clusters: lesions a reviewer said are not ones."""
    out: dict[int, list[Box]] = {}
    for image_id, x, y, w, h, label in Cluster.objects.filter(
        image_id__in=list(image_ids), status=Cluster.Status.REJECTED
    ).values_list("image_id", "x", "y", "width", "height", "label"):
        out.setdefault(image_id, []).append(Box(x, y, w, h, label))
    return out


# --- imports -----------------------------------------------------------------------------------------


def add_imported(*, image, boxes: Sequence[Box], points: bool = False) -> int:
    """Imported reference boxes for ``image`` (validated ``Box`` objects); ``points``: each box
    was made around a nucleus point (its centre). Returns how many rows were written."""
    threshold = match_threshold()
    current = list(GroundTruthBox.objects.filter(image=image))
    blockers = [r for r in current if PRECEDENCE[r.source] > PRECEDENCE[IMPORT]]
    blockers += _rejected([image.pk]).get(image.pk, [])
    existing = {_geometry(r) for r in current}
    imported = [r for r in current if r.source == IMPORT]
    seen: set[tuple] = set()
    new_rows, replaced = [], []
    for b in boxes:
        key = (b.x, b.y, b.width, b.height, b.label)
        if key in existing or key in seen:
            continue
        seen.add(key)
        if _same_lesion_any(b, blockers, threshold):
            continue
        row = GroundTruthBox(
            image=image, x=b.x, y=b.y, width=b.width, height=b.height, label=b.label, source=IMPORT,
            point_x=(b.x + b.width / 2) if points else None, point_y=(b.y + b.height / 2) if points else None,
        )
        new_rows.append(row)
        replaced.append([r for r in imported if lesion_overlap(r, b, threshold) is not None])
    GroundTruthBox.objects.bulk_create(new_rows)
    now = timezone.now()
    changed = []
    for row, olds in zip(new_rows, replaced, strict=True):
        for old in olds:
            if old.superseded_at is None:
                old.superseded_at, old.superseded_by = now, row
                changed.append(old)
    if changed:
        GroundTruthBox.with_history.bulk_update(changed, ["superseded_at", "superseded_by"])
    return len(new_rows)


# --- consensus ----------------------------------------------------------------------------------------


class _Row:
    """A ground-truth row as plain values (the bulk consensus path handles tens of thousands)."""

    __slots__ = ("pk", "image_id", "source", "x", "y", "width", "height", "label", "point_x", "point_y",
                 "superseded_at", "superseded_by_id")
    FIELDS = ("id", "image_id", "source", "x", "y", "width", "height", "label", "point_x", "point_y",
              "superseded_at", "superseded_by_id")

    def __init__(self, *values):
        for name, value in zip(self.__slots__, values, strict=True):
            setattr(self, name, value)


def _insert_new(rows: list[_Row], now) -> None:
    """Insert ``rows`` (current, consensus) and set their ``pk``: ids drawn from the sequence and
    COPY on PostgreSQL, bulk_create elsewhere."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        table = GroundTruthBox._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                           [table, len(rows)])
            ids = [i for (i,) in cursor.fetchall()]
        for row, pk in zip(rows, ids, strict=True):
            row.pk = pk
        insert_rows(GroundTruthBox, ("id", "image_id", "x", "y", "width", "height", "label", "source"),
                    [(r.pk, r.image_id, r.x, r.y, r.width, r.height, r.label, r.source) for r in rows],
                    {"created_at": now})
        return
    made = GroundTruthBox.objects.bulk_create(
        [GroundTruthBox(image_id=r.image_id, x=r.x, y=r.y, width=r.width, height=r.height, label=r.label,
                        source=r.source, created_at=now) for r in rows], batch_size=2000)
    for row, obj in zip(rows, made, strict=True):
        row.pk = obj.pk


def _write_supersede(rows: list[_Row]) -> None:
    """Store ``superseded_at``/``superseded_by`` of ``rows``: one UPDATE ... FROM VALUES per
    thousand on PostgreSQL, bulk_update elsewhere."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        GroundTruthBox.with_history.bulk_update(
            [GroundTruthBox(pk=r.pk, superseded_at=r.superseded_at, superseded_by_id=r.superseded_by_id)
             for r in rows], ["superseded_at", "superseded_by"], batch_size=500)
        return
    table = connection.ops.quote_name(GroundTruthBox._meta.db_table)
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 1000):
            chunk = rows[start:start + 1000]
            values = ", ".join(["(%s, %s::timestamptz, %s::bigint)"] * len(chunk))
            params = [v for r in chunk for v in (r.pk, r.superseded_at, r.superseded_by_id)]
            cursor.execute(
                f"UPDATE {table} AS t SET superseded_at = v.at, superseded_by_id = v.by "
                f"FROM (VALUES {values}) AS v(id, at, by) WHERE t.id = v.id", params)


def apply_consensus(truth: dict[int, list[Box]], *, now=None) -> None:
    """Make ``truth`` (image id -> the agreed consensus boxes of a new computation) the
    consensus layer of those images' ground truth (see the module docstring). Run inside the
    caller's transaction; a few queries and bulk writes for all the images together."""
    if not truth:
        return
    now = now or timezone.now()
    threshold = match_threshold()
    ids = list(truth)
    by_image: dict[int, list[_Row]] = {}
    for values in GroundTruthBox.with_history.filter(image_id__in=ids).filter(
        Q(superseded_at__isnull=True)
        | Q(source=IMPORT, superseded_by__source=CONSENSUS, superseded_by__superseded_at__isnull=True)
    ).order_by("id").values_list(*_Row.FIELDS):
        row = _Row(*values)
        by_image.setdefault(row.image_id, []).append(row)
    rejected = _rejected(ids)
    to_create: list[_Row] = []
    plans = []
    for image_id in ids:
        image_rows = by_image.get(image_id, [])
        current = [r for r in image_rows if r.superseded_at is None]
        blockers = [r for r in current if r.source == REVIEW] + rejected.get(image_id, [])
        boxes = truth[image_id]
        if blockers:
            boxes = [b for b in boxes if not _same_lesion_any(b, blockers, threshold)]
        old_layer = [r for r in current if r.source == CONSENSUS]
        unused = {_geometry(r): r for r in reversed(old_layer)}
        kept, created = [], []
        for b in boxes:
            same = unused.pop((b.x, b.y, b.width, b.height, b.label), None)
            if same is not None:
                kept.append(same)
            else:
                created.append(_Row(None, image_id, CONSENSUS, b.x, b.y, b.width, b.height, b.label,
                                    None, None, None, None))
        to_create += created
        if image_rows:
            plans.append((image_rows, kept, created))
    _insert_new(to_create, now)
    changed: dict[int, _Row] = {}
    for image_rows, kept, created in plans:
        kept_ids = {r.pk for r in kept}
        layer = [(r, _box(r)) for r in kept + created]
        moved = set()  # the previous layer's rows that leave it now
        for old in image_rows:
            if old.source == CONSENSUS and old.superseded_at is None and old.pk not in kept_ids:
                successor = best_match(old, layer, threshold)
                old.superseded_at, old.superseded_by_id = now, successor.pk if successor else None
                changed[old.pk] = old
                moved.add(old.pk)
        # imported boxes under the layer always point at a current consensus row (no chains)
        for old in image_rows:
            if old.source != IMPORT:
                continue
            target = best_match(old, layer, threshold)
            if old.superseded_at is None:
                if target is not None:
                    old.superseded_at, old.superseded_by_id = now, target.pk
                    changed[old.pk] = old
            elif old.superseded_by_id in moved:
                if target is not None:
                    old.superseded_by_id = target.pk
                else:
                    old.superseded_at, old.superseded_by_id = None, None  # its consensus is gone
                changed[old.pk] = old
    _write_supersede(list(changed.values()))


# --- review -------------------------------------------------------------------------------------------


def _lesion_rows(image_id: int, cluster, boxes: Sequence[Box], threshold: float) -> list:
    """The current rows of the lesion a review decision on ``cluster`` is about, locked."""
    out = []
    for r in GroundTruthBox.objects.select_for_update().filter(image_id=image_id):
        if r.source == REVIEW and r.cluster_id_at_source not in (None, cluster.pk):
            continue  # another cluster's decision stands
        if (r.source == REVIEW and r.cluster_id_at_source == cluster.pk) or _same_lesion_any_box(
                r, boxes, threshold):
            out.append(r)
    return out


def _same_lesion_any_box(row, boxes: Sequence[Box], threshold: float) -> bool:
    return any(lesion_overlap(row, b, threshold) is not None for b in boxes)


def apply_review(*, image, cluster, before: Box, box: Box, reviewer, now=None):
    """The reviewer's decision ``box`` (label included) on ``cluster``, whose box was ``before``:
    a new current row (source review) that supersedes the lesion's current rows. Returns it."""
    now = now or timezone.now()
    olds = _lesion_rows(image.pk, cluster, [box, before], match_threshold())
    row = GroundTruthBox.objects.create(image=image, x=box.x, y=box.y, width=box.width, height=box.height,
                                        label=box.label, source=REVIEW, cluster_id_at_source=cluster.pk,
                                        decided_by=reviewer)
    GroundTruthBox.with_history.filter(pk__in=[r.pk for r in olds]).update(superseded_at=now, superseded_by=row)
    return row


def retire_for_rejection(*, image_id: int, cluster, now=None) -> list[int]:
    """"Not a lesion": retire the current rows of ``cluster``'s lesion. Returns their ids."""
    now = now or timezone.now()
    olds = _lesion_rows(image_id, cluster, [cluster.as_box()], match_threshold())
    ids = [r.pk for r in olds]
    GroundTruthBox.with_history.filter(pk__in=ids).update(superseded_at=now, superseded_by=None)
    return ids


# --- repair of data stored before one-truth-per-lesion ------------------------------------------------


def repair_duplicates(truth_model, cluster_model, *, threshold: float, now=None) -> dict:
    """Collapse the copies of each lesion: per image, the current rows are taken from the highest
    precedence and newest down; a row of the same lesion as one already kept is superseded by it;
    a current row (not a reviewer's) on a rejected cluster is retired. Takes the models as
    arguments so that a migration can pass its historical ones. Returns counts."""
    now = now or timezone.now()
    manager = truth_model._base_manager
    rows = list(manager.filter(superseded_at__isnull=True).order_by("image_id", "id"))
    by_image: dict[int, list] = {}
    for r in rows:
        by_image.setdefault(r.image_id, []).append(r)
    rejected: dict[int, list] = {}
    for image_id, x, y, w, h, label in cluster_model._base_manager.filter(status="rejected").values_list(
            "image_id", "x", "y", "width", "height", "label"):
        rejected.setdefault(image_id, []).append(Box(x, y, w, h, label))
    changed = []
    superseded = retired = 0
    for image_id, image_rows in by_image.items():
        order = sorted(image_rows, key=lambda r: (PRECEDENCE.get(r.source, 0), r.created_at, r.pk), reverse=True)
        kept: list = []
        for r in order:
            if r.source != REVIEW and _same_lesion_any_box(r, rejected.get(image_id, []), threshold):
                r.superseded_at, r.superseded_by = now, None
                changed.append(r)
                retired += 1
                continue
            winner = next((k for k in kept if lesion_overlap(r, _box(k), threshold) is not None
                           or lesion_overlap(k, _box(r), threshold) is not None), None)
            if winner is None:
                kept.append(r)
            else:
                r.superseded_at, r.superseded_by = now, winner
                changed.append(r)
                superseded += 1
    if changed:
        manager.bulk_update(changed, ["superseded_at", "superseded_by"], batch_size=1000)
    return {"images": len(by_image), "superseded": superseded, "retired": retired,
            "current": len(rows) - superseded - retired}
