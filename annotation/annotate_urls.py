from django.urls import path

from annotation import annotate_views

app_name = "annotate"

urlpatterns = [
    path("", annotate_views.queue, name="queue"),
    path("next/", annotate_views.next_image, name="next"),
    path("<int:image_id>/", annotate_views.annotate, name="annotate"),
    path("<int:image_id>/editor/", annotate_views.editor, name="editor"),
    path("<int:image_id>/skip/", annotate_views.skip, name="skip"),
]
