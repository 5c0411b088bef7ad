"""The admin's "images by state" page (the figures on the admin's home link here)."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from annotation.image_states import STATES, images_in_state, state_counts
from cytoloop.roles import Role, role_required

PAGE_SIZE = 50


@role_required(Role.ADMIN)
@require_GET
def images(request):
    state = request.GET.get("state", "")
    state = state if state in STATES else "not_annotated"
    counts = state_counts()
    page = Paginator(images_in_state(state), PAGE_SIZE).get_page(request.GET.get("page"))
    base = reverse("lab:images")
    return render(request, "home/lab_images.html", {
        "state": state,
        "state_text": STATES[state],
        "chips": [{"value": k, "text": t, "count": counts[k], "url": f"{base}?state={k}", "active": k == state}
                  for k, t in STATES.items()],
        "page": page,
        "pages": {
            "previous": f"{base}?state={state}&page={page.previous_page_number()}" if page.has_previous() else None,
            "next": f"{base}?state={state}&page={page.next_page_number()}" if page.has_next() else None,
        },
    })
