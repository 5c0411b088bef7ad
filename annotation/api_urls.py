from django.urls import path

from annotation import api

urlpatterns = [
    path("annotations/", api.AnnotationsView.as_view(), name="api-annotations"),
    path("images/<int:pk>/annotations/", api.ImageAnnotationsView.as_view(), name="api-image-annotations"),
    path("images/<int:pk>/predictions/", api.ImagePredictionsView.as_view(), name="api-image-predictions"),
    path("images/<int:pk>/consensus/", api.ImageConsensusView.as_view(), name="api-image-consensus"),
    path("queue/next/", api.NextImageView.as_view(), name="api-queue-next"),
    path("images/<int:pk>/skip/", api.SkipView.as_view(), name="api-skip"),
    path("images/<int:pk>/draft/", api.DraftView.as_view(), name="api-draft"),
    path("labelstudio/webhook/", api.LabelStudioWebhookView.as_view(), name="api-ls-webhook"),
]
