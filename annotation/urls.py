"""Dataset pages, mounted at /datasets/ (platform/cytoloop/urls.py)."""

from django.urls import path

from annotation import views

app_name = "annotation"

urlpatterns = [
    path("", views.datasets, name="datasets"),
    # before <name>/: "import" is a reserved dataset name
    path("import/", views.import_images, name="import"),
    path("import/<int:pk>/", views.import_job, name="import_job"),
    path("<slug:name>/", views.gallery, name="gallery"),
    path("<slug:name>/images/<int:pk>/", views.image, name="image"),
]
