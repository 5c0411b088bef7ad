"""Reads: small functions returning QuerySets or plain dicts, one module per concern.

``from annotation import selectors; selectors.dataset_images(...)`` reaches every one of them.
"""

from annotation.selectors.agreement import cluster_label_matrix, dataset_agreement
from annotation.selectors.datasets import (
    SPLITS,
    dataset_by_name,
    dataset_images,
    dataset_names,
    dataset_records,
    datasets_with_counts,
    ground_truth_label_counts,
    ground_truth_labels_by_image,
    image_in_dataset,
    image_predictions,
    import_job,
    label_image_counts,
    neighbours,
    position_in,
    recent_import_jobs,
    skipped_by_reason,
    split_counts,
)
from annotation.selectors.review import (
    agreement_over_time,
    class_cluster_stats,
    cluster_for_review,
    datasets_with_clusters,
    dispute_facets,
    disputed_clusters,
    image_audit,
    image_clusters,
    model_box_acceptance,
    next_disputed_cluster,
    order_disputes,
    pending_extra_experts,
    reviewer_annotated,
    stored_reliabilities,
    users_by_id,
)
from annotation.selectors.training import images_by_id, training_truth
from annotation.selectors.workflow import (
    annotation_rows,
    own_annotations,
    queue_candidates,
    queue_progress,
    required_experts,
    visible_annotations,
)

__all__ = [
    "SPLITS", "agreement_over_time", "annotation_rows", "class_cluster_stats", "cluster_for_review",
    "cluster_label_matrix", "dataset_agreement", "dataset_by_name", "dataset_images", "dataset_names",
    "dataset_records", "datasets_with_clusters", "datasets_with_counts", "dispute_facets",
    "disputed_clusters", "ground_truth_label_counts", "ground_truth_labels_by_image", "image_audit",
    "image_clusters", "image_in_dataset", "images_by_id", "image_predictions", "import_job", "label_image_counts",
    "model_box_acceptance", "neighbours", "next_disputed_cluster", "order_disputes", "own_annotations",
    "pending_extra_experts", "position_in", "queue_candidates", "queue_progress", "recent_import_jobs",
    "required_experts", "reviewer_annotated", "skipped_by_reason", "split_counts",
    "stored_reliabilities", "training_truth", "users_by_id", "visible_annotations",
]
