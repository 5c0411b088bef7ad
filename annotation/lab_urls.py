"""Lab overview pages, mounted at /lab/ (platform/cytoloop/urls.py)."""

from django.urls import path

from annotation import lab_views

app_name = "lab"

urlpatterns = [
    path("images/", lab_views.images, name="images"),
]
