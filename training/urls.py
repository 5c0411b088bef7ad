"""Training pages, mounted at /training/ (platform/cytoloop/urls.py)."""

from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("", views.runs, name="runs"),
    path("runs/<int:pk>/", views.run, name="run"),
    path("runs/<int:pk>/cancel/", views.cancel, name="cancel"),
    path("runs/<int:pk>/resume/", views.resume, name="resume"),
    path("models/", views.models, name="models"),
    path("models/rollback/", views.rollback, name="rollback"),
    path("models/<int:pk>/", views.model, name="model"),
    path("models/<int:pk>/promote/", views.promote, name="promote"),
]
