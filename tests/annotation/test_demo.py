"""The demo `make run` seeds: synthetic images always, the real CRIC images when present."""

import pytest
from django.db.models import Count

from annotation.demo import CRIC_NAME, SYNTHETIC_NAME
from annotation.models import Dataset, GroundTruthBox
from tests.helpers import manage


def test_seed_demo_includes_cric_with_its_licence_and_is_idempotent(transactional_db, tmp_path, settings):
    if not settings.CRIC_DIR.exists():
        pytest.skip("CRIC folder not present")
    from tests.helpers import child_env

    env = {**child_env(), "MEDIA_ROOT": str(tmp_path / "media"), "CYTOLOOP_VAR_DIR": str(tmp_path)}
    first = manage("seed_demo", "--synthetic-images", "2", "--quiet-logins", env=env)
    assert first.returncode == 0, first.stderr
    assert Dataset.objects.get(name=SYNTHETIC_NAME).images.count() == 2
    cric = Dataset.objects.get(name=CRIC_NAME)
    assert cric.license == "CC BY 4.0" and "10.1038/s41597-021-00933-8" in cric.citation
    assert cric.images.count() == 32
    again = manage("seed_demo", "--synthetic-images", "2", env=env)
    assert again.returncode == 0
    assert "admin@cytoloop.local" in again.stdout
    assert Dataset.objects.get(name=SYNTHETIC_NAME).images.count() == 2
    assert GroundTruthBox.objects.filter(image__dataset=cric).count() == 860


def test_seed_demo_without_cric_is_synthetic_only(transactional_db, tmp_path):
    from tests.helpers import child_env

    env = {**child_env(), "MEDIA_ROOT": str(tmp_path / "media"), "CYTOLOOP_VAR_DIR": str(tmp_path),
           "CRIC_DIR": str(tmp_path / "no-cric")}
    result = manage("seed_demo", "--synthetic-images", "1", "--quiet-logins", env=env)
    assert result.returncode == 0, result.stderr
    assert "synthetic images only" in result.stdout
    names = set(Dataset.objects.annotate(n=Count("images")).values_list("name", flat=True))
    assert names == {SYNTHETIC_NAME}
