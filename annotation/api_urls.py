from django.urls import path

from annotation import api

urlpatterns = [
    path("annotations/", api.AnnotationsView.as_view(), name="api-annotations"),
    path("images/<int:pk>/annotations/", api.ImageAnnotationsView.as_view(), name="api-image-annotations"),
    path("queue/next/", api.NextImageView.as_view(), name="api-queue-next"),
    path("images/<int:pk>/skip/", api.SkipView.as_view(), name="api-skip"),
    path("labelstudio/webhook/", api.LabelStudioWebhookView.as_view(), name="api-ls-webhook"),
]
