"""Platform pages: dashboard, system status, /healthz."""

from django.contrib.auth.decorators import login_not_required
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from cytoloop.health import all_checks, overall
from cytoloop.roles import Role, role_required, user_roles


@require_GET
def home(request):
    return render(request, "cytoloop/home.html", {"roles": sorted(r.value for r in user_roles(request.user))})


@login_not_required
@never_cache
@require_GET
def healthz(request):
    """JSON status of each service, for load balancers and monitoring (no login: it holds no data)."""
    checks = all_checks()
    status = overall(checks)
    return JsonResponse({"status": status, "checks": checks}, status=200 if status == "ok" else 503)


@role_required(Role.ADMIN)
@require_GET
def system(request):
    checks = all_checks()
    context = {"checks": checks, "status": overall(checks)}
    if request.htmx:
        return render(request, "cytoloop/system.html#checks", context)
    return render(request, "cytoloop/system.html", context)
