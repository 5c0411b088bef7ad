"""Platform pages: dashboard, system status, /healthz/live and /ready, media files (logged-in users only)."""

import mimetypes
from pathlib import PurePosixPath

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe

from cytoloop.health import all_checks, overall
from cytoloop.home import sections_for
from cytoloop.roles import Role, role_required, user_roles


@require_GET
def home(request):
    """Each role's home: the sections the apps register (cytoloop.home), one group per role held."""
    return render(request, "cytoloop/home.html", {
        "roles": sorted(r.value for r in user_roles(request.user)),
        "groups": sections_for(request),
    })


@login_not_required
@never_cache
@require_GET
def healthz_live(request):
    """Liveness: the process answers requests; it asks no other service."""
    return JsonResponse({"status": "ok"})


@login_not_required
@never_cache
@require_GET
def healthz_ready(request):
    """Readiness (also /healthz): 503 only when the database fails; the broker, Label Studio and
    the worker are reported, and a busy or absent worker is "unknown" (cytoloop.health). No login:
    it holds no data."""
    checks = all_checks()
    status = overall(checks)
    return JsonResponse({"status": status, "checks": checks}, status=503 if status == "error" else 200)


@role_required(Role.ADMIN)
@require_GET
def system(request):
    checks = all_checks()
    context = {"checks": checks, "status": overall(checks)}
    if request.htmx:
        return render(request, "cytoloop/system.html#checks", context)
    return render(request, "cytoloop/system.html", context)


#: Types served inline; anything else is sent as a download so that no stored file can run as a
#: page of this site.
INLINE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
}
#: Media folders never served: browser uploads waiting for (or refused by) the import worker.
PRIVATE_PREFIXES = ("uploads/",)


def _media_name(path: str) -> str:
    """``path`` as a storage name, or Http404 for anything that could leave the media folder."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        raise Http404("no such file")
    parts = PurePosixPath(path).parts
    if any(part in ("..", ".", "") or part.startswith(".") for part in parts):
        raise Http404("no such file")
    name = "/".join(parts)
    if name.startswith(PRIVATE_PREFIXES):
        raise Http404("no such file")
    return name


@require_safe
def media(request, path):
    """A stored file (image, thumbnail, artifact) for a logged-in user; the login middleware
    sends everyone else to the login page."""
    name = _media_name(path)
    try:
        handle = default_storage.open(name, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, SuspiciousFileOperation):
        raise Http404("no such file") from None
    except OSError:
        raise Http404("no such file") from None
    suffix = PurePosixPath(name).suffix.lower()
    content_type = INLINE_TYPES.get(suffix)
    attachment = content_type is None
    if attachment:
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if content_type.startswith(("text/html", "image/svg", "application/xhtml", "text/xml")):
            content_type = "application/octet-stream"
    response = FileResponse(
        handle, content_type=content_type, as_attachment=attachment,
        filename=PurePosixPath(name).name,
    )
    response["Cache-Control"] = "private, max-age=86400"
    response["X-Content-Type-Options"] = "nosniff"
    return response
