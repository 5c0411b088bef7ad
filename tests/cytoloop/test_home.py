"""Each role's home (cytoloop.views.home + the apps' home_sections): what it shows, that every
figure links to the page listing those things, and that it stays a fixed number of queries.

Django test client on the real PostgreSQL; data goes in through the services."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotation import services
from annotation.geometry import Box
from annotation.models import Assignment, Cluster, Image, ImportJob
from cytoloop.templatetags.cytoloop_dates import format_when
from tests.annotation.conftest import png_bytes

pytestmark = pytest.mark.django_db

WHEN = r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2} UTC"
P1 = (20.0, 20.0, 50.0, 50.0)
P2 = (150.0, 100.0, 60.0, 60.0)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")


def _images(tmp_path, name: str, count: int, *, experts_per_image: int) -> list[Image]:
    folder = tmp_path / f"in-{name}"
    folder.mkdir()
    for i in range(count):
        (folder / f"{name}-{i}.png").write_bytes(png_bytes(sum(map(ord, name)) * 100 + i, size=(300, 200)))
    dataset, _ = services.ensure_dataset(name=name, experts_per_image=experts_per_image)
    services.import_images(dataset=dataset, path=folder)
    return list(Image.objects.filter(dataset=dataset).order_by("original_name"))


def _save(image, expert, *boxes):
    services.save_expert_annotation(image=image, annotator=expert, origin="editor",
                                    boxes=[Box(*xywh, label) for label, xywh in boxes])


def _section(html: str, element_id: str) -> str:
    start = html.index(f'id="{element_id}"')
    return html[start:html.index("</article>", start)]


def test_every_time_is_written_with_its_date_and_zone():
    assert format_when(datetime(2026, 12, 3, 6, 56, tzinfo=UTC)) == "3 Dec 2026, 06:56 UTC"
    assert format_when(None) == ""


# --- the pathologist ---------------------------------------------------------------------------


def test_a_pathologist_sees_their_progress_and_a_button_that_opens_the_next_image(client, make_user, tmp_path):
    first, *_ = _images(tmp_path, "pq", 3, experts_per_image=1)
    pathologist = make_user("pat@example.org", roles=["pathologist"])
    held = services.next_assignment(annotator=pathologist)
    services.submit_annotation(image=held.image, annotator=pathologist, boxes=[Box(*P1, "LSIL")])
    client.force_login(pathologist)
    queue = _section(client.get("/").content.decode(), "home-queue")
    assert re.search(r"<strong>1</strong> of <strong>3</strong> done", queue) and "2 waiting" in queue
    assert f'href="{reverse("annotate:queue")}"' in queue
    assert f'action="{reverse("annotate:next")}"' in queue and 'id="open-next"' in queue
    opened = client.post(reverse("annotate:next"))
    now_held = Assignment.objects.get(annotator=pathologist, status="active")
    assert opened.status_code == 302 and opened["Location"] == reverse("annotate:annotate", args=[now_held.image_id])
    queue = _section(client.get("/").content.decode(), "home-queue")
    assert re.search(r"<strong>1</strong> of <strong>3</strong> done", queue) and "2 waiting" in queue  # the held one too
    assert f"until {format_when(now_held.expires_at)}" in queue
    assert f'href="{reverse("annotate:annotate", args=[now_held.image_id])}" id="open-next"' in queue


# --- the reviewer ------------------------------------------------------------------------------


@pytest.fixture
def disputes(tmp_path, make_user):
    """Three images, two experts each: a risk-10 dispute (NILM vs HSIL), a risk-1 one (ASC-H vs HSIL),
    one agreed image."""
    e1, e2 = (make_user(f"e{i}@example.org", roles=["pathologist"]) for i in (1, 2))
    mild, severe, agreed = _images(tmp_path, "rd", 3, experts_per_image=2)
    for image, (a, b) in ((mild, ("ASC-H", "HSIL")), (severe, ("NILM", "HSIL")), (agreed, ("LSIL", "LSIL"))):
        _save(image, e1, (a, P1))
        _save(image, e2, (b, P1))
        services.compute_consensus(image=image)
    return {c.image.original_name: c for c in Cluster.objects.select_related("image")}


def test_a_reviewer_sees_the_disputes_waiting_riskiest_first_each_linked(client_as, disputes):
    html = client_as("reviewer").get("/").content.decode()
    section = _section(html, "home-disputes")
    assert re.search(r'id="disputes-waiting"><strong>2</strong> disputed clusters', section)
    severe, mild = disputes["rd-1.png"], disputes["rd-0.png"]
    assert [int(pk) for pk in re.findall(r'<li data-cluster="(\d+)"', section)] == [severe.pk, mild.pk]
    for cluster in (severe, mild):
        assert f'href="{reverse("review:cluster", args=[cluster.pk])}"' in section
    assert f'href="{reverse("review:disputes")}"' in section
    assert len(re.findall(WHEN, section)) == 2  # when each was found, with its date


# --- the admin ---------------------------------------------------------------------------------


@pytest.fixture
def lab(tmp_path, make_user):
    """Six images, two experts each, one in each state (two in progress: one started, one held)."""
    e1, e2 = (make_user(f"lab{i}@example.org", roles=["pathologist"]) for i in (1, 2))
    fresh, started, held, full, disputed, agreed = _images(tmp_path, "lab", 6, experts_per_image=2)
    _save(started, e1, ("LSIL", P1))
    Assignment.objects.create(image=held, annotator=e2, expires_at=timezone.now() + timedelta(minutes=30))
    for image, (a, b) in ((full, ("LSIL", "LSIL")), (disputed, ("NILM", "HSIL")), (agreed, ("HSIL", "HSIL"))):
        _save(image, e1, (a, P1))
        _save(image, e2, (b, P1))
    for image in (disputed, agreed):
        services.compute_consensus(image=image)
    return {"not_annotated": [fresh], "in_progress": [started, held], "awaiting_consensus": [full],
            "disputed": [disputed], "agreed": [agreed]}


def test_an_admin_sees_images_by_state_each_figure_linking_to_those_images(client_as, lab):
    client = client_as("admin")
    section = _section(client.get("/").content.decode(), "home-images")
    figures = {state: (url, int(n)) for url, state, n in
               re.findall(r'href="([^"]+)" data-state="(\w+)"><strong>(\d+)</strong>', section)}
    assert {state: n for state, (_, n) in figures.items()} == {state: len(images) for state, images in lab.items()}
    for state, (url, _) in figures.items():
        listing = client.get(url.replace("&amp;", "&")).content.decode()
        shown = re.findall(r'<tr data-image="(\d+)"', listing)
        assert sorted(map(int, shown)) == sorted(i.pk for i in lab[state]), state
    assert re.search(r'id="lab-disputes"><strong>1</strong>', section)


def test_an_admin_sees_running_jobs_promoted_models_and_the_current_round_each_linked(client_as, tmp_path, lab):
    from inference.models import PredictionJob, RankingRound
    from training.models import DatasetVersion, ModelVersion, TrainingRun

    dataset = lab["agreed"][0].dataset
    dv = DatasetVersion.objects.create(dataset=dataset, number=1, splits={})
    run = TrainingRun.objects.create(kind="classifier", dataset_version=dv, config={}, status="running",
                                     started_at=timezone.now())
    TrainingRun.objects.create(kind="classifier", dataset_version=dv, config={}, status="succeeded")
    det, cls = (ModelVersion.objects.create(kind=k, name=f"{k}-v1", dataset_version=dv, artifact_dir="x", config={},
                                            metrics={}, promoted=True) for k in ("detector", "classifier"))
    ModelVersion.objects.create(kind="classifier", name="classifier-v0", dataset_version=dv, artifact_dir="y",
                                config={}, metrics={})
    PredictionJob.objects.create(dataset=dataset, detector_version=det, classifier_version=cls, status="running")
    old = RankingRound.objects.create(dataset=dataset, strategy="entropy", k=5, detector_version=det,
                                      classifier_version=cls, active=False)
    current = RankingRound.objects.create(dataset=dataset, strategy="margin", k=5, detector_version=det,
                                          classifier_version=cls, pool_size=40)
    job = ImportJob.objects.create(dataset=dataset, upload_dir="uploads/x", status="running", total=4, processed=1)
    html = client_as("admin").get("/").content.decode()
    training = _section(html, "home-training")
    assert re.search(rf'href="{reverse("training:runs")}#runs" id="runs-active"><strong>1</strong> run queued', training)
    assert f'href="{reverse("training:run", args=[run.pk])}"' in training and re.search(WHEN, training)
    assert f'href="{reverse("training:models")}" id="promoted-models"' in training
    for version in (det, cls):
        assert f'href="{reverse("training:model", args=[version.pk])}">{version.name}</a>' in training
    assert "classifier-v0" not in training
    inference = _section(html, "home-inference")
    assert re.search(r'id="predictions-active"><strong>1</strong> prediction job queued', inference)
    assert f'href="{reverse("inference:round", args=[current.pk])}"' in inference
    assert f'href="{reverse("inference:round", args=[old.pk])}"' not in inference
    assert f'href="{reverse("inference:rounds")}" id="current-rounds"' in inference
    imports = _section(html, "home-imports")
    assert f'href="{reverse("annotation:import_job", args=[job.pk])}"' in imports


def test_the_images_by_state_page_is_for_admins_only(client_as):
    assert client_as("reviewer").get(reverse("lab:images")).status_code == 403


# --- several roles, and speed ------------------------------------------------------------------


def test_a_user_with_several_roles_sees_each_of_their_sections(client_as, disputes):
    html = client_as("pathologist", "reviewer", "admin").get("/").content.decode()
    order = [html.index(f'id="panel-{role}"') for role in ("pathologist", "reviewer", "admin")]
    assert order == sorted(order)
    for element in ("home-queue", "home-disputes", "home-images", "home-training", "home-inference"):
        assert f'id="{element}"' in html
    only = client_as("reviewer").get("/").content.decode()  # client_as logs the new user in
    assert 'id="panel-reviewer"' in only and 'id="panel-admin"' not in only and 'id="panel-pathologist"' not in only


def test_the_home_of_every_role_is_a_fixed_number_of_queries(client_as, lab, disputes, make_user, tmp_path,
                                                            django_assert_max_num_queries):
    client = client_as("pathologist", "reviewer", "admin")
    client.get("/")  # warm: discovery of the apps' sections, the session
    with django_assert_max_num_queries(22) as few:
        assert client.get("/").status_code == 200
    # the same page over twice the data: no query per row
    services.request_another_expert(image=lab["disputed"][0], reviewer=make_user("rev@example.org", roles=["reviewer"]))
    e1, e2 = (make_user(f"more{i}@example.org", roles=["pathologist"]) for i in (1, 2))
    for image in _images(tmp_path, "more", 4, experts_per_image=2):
        _save(image, e1, ("NILM", P2))
        _save(image, e2, ("SCC", P2))
        services.compute_consensus(image=image)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get("/").status_code == 200
