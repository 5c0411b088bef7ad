from django.urls import path

from annotation import review_views

app_name = "review"

urlpatterns = [
    path("", review_views.disputes, name="disputes"),
    path("clusters/<int:pk>/", review_views.cluster, name="cluster"),
    path("agreement/", review_views.dashboard, name="dashboard"),
]
