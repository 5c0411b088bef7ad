from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cytoloop import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", views.healthz_ready, name="healthz"),  # = readiness, for older checks
    path("healthz/live", views.healthz_live, name="healthz-live"),
    path("healthz/ready", views.healthz_ready, name="healthz-ready"),
    path("system/", views.system, name="system"),
    path("datasets/", include("annotation.urls")),
    path("annotate/", include("annotation.annotate_urls")),
    path("review/", include("annotation.review_urls")),
    path("lab/", include("annotation.lab_urls")),
    path("training/", include("training.urls")),
    path("inference/", include("inference.urls")),
    # images and thumbnails, to logged-in users only (the login middleware covers this view)
    path("media/<path:path>", views.media, name="media"),
    path("admin/", admin.site.urls),
    path("api/", include("annotation.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
