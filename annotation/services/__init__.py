"""Writes for datasets, images, annotations, consensus and review, one module per concern.

Each public function owns its transaction(s) (keyword-only arguments; the audit row in the same
transaction). Reads live in ``annotation.selectors``. Background work is queued by task name
(``cytoloop.jobs.enqueue_on_commit("annotation.x", id)``), so no module here imports
``annotation.tasks``. Everything public is re-exported here: ``from annotation.services import
submit_annotation`` and ``services.submit_annotation(...)`` reach it wherever it lives.
"""

from annotation.services.common import (
    AnnotationRejected,
    NotAssigned,
    Progress,
    StaleAnnotation,
)
from annotation.services.consensus import (
    CLUSTER_COLUMNS,
    TRUTH_COLUMNS,
    compute_consensus,
    consensus_config,
    consensus_sweep,
    queue_consensus,
    recompute_dataset,
)
from annotation.services.datasets import (
    ensure_dataset,
    set_image_splits,
)
from annotation.services.export import (
    export_dataset,
)
from annotation.services.imports import (
    UPLOADS,
    ImportReport,
    Skipped,
    ensure_thumbnail,
    import_images,
    read_annotations,
    run_import_job,
    start_import_job,
)
from annotation.services.label_studio_mirror import (
    ANNOTATION_ACTIONS,
    DELETE_ACTIONS,
    WebhookPayloadError,
    mirror_ls_annotation,
    mirror_ls_deletions,
    mirror_ls_event,
    reconcile_label_studio,
)
from annotation.services.outbox import (
    OUTBOX_LEASE_S,
    OUTBOX_MAX_ATTEMPTS,
    OUTBOX_RETRY_BASE_S,
    OUTBOX_RETRY_MAX_S,
    enqueue_outbox,
    flush_outbox,
)
from annotation.services.queue import (
    next_assignment,
    release_expired_assignments,
    skip_assignment,
)
from annotation.services.reliability import (
    update_reliability,
)
from annotation.services.review import (
    ReviewRefused,
    comment_on_cluster,
    reject_cluster,
    request_another_expert,
    resolve_cluster,
)
from annotation.services.simulated_experts import (
    ImageHeld,
    simulate_dataset_experts,
    simulated_expert_user,
)
from annotation.services.submissions import (
    PREDICTION_TOLERANCE_PX,
    UNCHECKED,
    save_expert_annotation,
    submit_annotation,
    validate_boxes,
)

__all__ = [
    "ANNOTATION_ACTIONS",
    "AnnotationRejected",
    "CLUSTER_COLUMNS",
    "comment_on_cluster",
    "compute_consensus",
    "consensus_config",
    "consensus_sweep",
    "DELETE_ACTIONS",
    "enqueue_outbox",
    "ensure_dataset",
    "ensure_thumbnail",
    "export_dataset",
    "flush_outbox",
    "ImageHeld",
    "import_images",
    "ImportReport",
    "mirror_ls_annotation",
    "mirror_ls_deletions",
    "mirror_ls_event",
    "next_assignment",
    "NotAssigned",
    "OUTBOX_LEASE_S",
    "OUTBOX_MAX_ATTEMPTS",
    "OUTBOX_RETRY_BASE_S",
    "OUTBOX_RETRY_MAX_S",
    "PREDICTION_TOLERANCE_PX",
    "Progress",
    "queue_consensus",
    "read_annotations",
    "recompute_dataset",
    "reconcile_label_studio",
    "reject_cluster",
    "set_image_splits",
    "release_expired_assignments",
    "request_another_expert",
    "resolve_cluster",
    "ReviewRefused",
    "run_import_job",
    "save_expert_annotation",
    "simulate_dataset_experts",
    "simulated_expert_user",
    "skip_assignment",
    "Skipped",
    "StaleAnnotation",
    "start_import_job",
    "submit_annotation",
    "TRUTH_COLUMNS",
    "UNCHECKED",
    "update_reliability",
    "UPLOADS",
    "validate_boxes",
    "WebhookPayloadError",
]
