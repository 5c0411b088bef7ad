"""Expert reliability on stored clusters: the careless expert scores lowest."""

import numpy as np
import pytest
from django.utils import timezone

from annotation.geometry import Box
from annotation.models import Assignment, ExpertReliability, Image
from annotation.selectors import cluster_label_matrix
from annotation.services import (
    recompute_dataset,
    submit_annotation,
    update_reliability,
)
from tests.annotation.conftest import import_pngs

pytestmark = pytest.mark.django_db
LABELS = ["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"]


def test_reliability_ranks_a_careless_expert_last(tmp_path, make_user):
    ds = import_pngs(tmp_path / "imgs", "rel", 12, seed=1200, size=(400, 100), prefix="r", experts_per_image=3)[0].dataset
    experts = [make_user(f"z{i}@example.org", roles=["pathologist"]) for i in range(3)]
    rng = np.random.default_rng(0)
    for image in Image.objects.filter(dataset=ds):
        truth = [LABELS[int(k)] for k in rng.integers(0, 6, size=4)]
        for j, user in enumerate(experts):
            labels = [lab if j < 2 or rng.random() < 0.3 else LABELS[int(rng.integers(0, 6))] for lab in truth]
            boxes = [Box(10.0 + 95 * k, 20.0, 60.0, 60.0, lab) for k, lab in enumerate(labels)]
            Assignment.objects.create(image=image, annotator=user, expires_at=timezone.now() + timezone.timedelta(hours=1))
            submit_annotation(image=image, annotator=user, boxes=boxes)
    recompute_dataset(dataset=ds)
    labels, consensus, expert_ids, _ = cluster_label_matrix(ds)
    assert labels.shape == (48, 3) and (consensus >= 0).all()
    rows = {r.user_id: r for r in update_reliability(dataset=ds)}
    careless = rows[experts[2].pk]
    assert careless.reliability < min(rows[experts[0].pk].reliability, rows[experts[1].pk].reliability)
    assert careless.agreement < rows[experts[0].pk].agreement
    assert sum(map(sum, careless.confusion)) == careless.n_clusters == 48
    assert ExpertReliability.objects.count() == 3
