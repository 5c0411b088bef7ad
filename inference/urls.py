"""Active learning pages, mounted at /inference/ (platform/cytoloop/urls.py)."""

from django.urls import path

from inference import views

app_name = "inference"

urlpatterns = [
    path("", views.index, name="index"),
    path("predict/", views.predict, name="predict"),
    path("rounds/", views.rounds, name="rounds"),
    path("rounds/<int:pk>/", views.round_detail, name="round"),
]
