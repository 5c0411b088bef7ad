"""python manage.py seed_demo: demo users (and, as later steps land, demo data) on first start."""

import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from cytoloop.roles import Role, set_roles

DEMO_USERS = (
    ("admin@cytoloop.local", "Ada Admin", (Role.ADMIN,)),
    ("reviewer@cytoloop.local", "Rita Reviewer", (Role.REVIEWER,)),
    ("path1@cytoloop.local", "Paula Pathologist", (Role.PATHOLOGIST,)),
    ("path2@cytoloop.local", "Peter Pathologist", (Role.PATHOLOGIST,)),
    ("path3@cytoloop.local", "Priya Pathologist", (Role.PATHOLOGIST,)),
)


class Command(BaseCommand):
    help = (
        "Seed the demo on first start: demo users (admin, reviewer, three pathologists) with "
        "generated passwords kept in var/demo-logins.json. Running it again changes nothing and "
        "prints the same logins."
    )

    def add_arguments(self, parser):
        parser.add_argument("--quiet-logins", action="store_true", help="do not print the logins")

    def handle(self, *args, quiet_logins=False, **options):
        logins_file = settings.VAR_DIR / "demo-logins.json"
        logins = json.loads(logins_file.read_text()) if logins_file.exists() else {}
        User = get_user_model()
        with transaction.atomic():
            for email, name, roles in DEMO_USERS:
                user, created = User.objects.get_or_create(username=email, defaults={"email": email})
                if created or email not in logins:
                    logins[email] = secrets.token_urlsafe(9)
                    user.set_password(logins[email])
                    user.first_name, _, user.last_name = name.partition(" ")
                    user.save()
                set_roles(user, roles)
        logins_file.parent.mkdir(parents=True, exist_ok=True)
        logins_file.write_text(json.dumps(logins, indent=2) + "\n")
        logins_file.chmod(0o600)
        if not quiet_logins:
            self.stdout.write("Demo logins:")
            for email, _, roles in DEMO_USERS:
                role_names = ",".join(r.value for r in roles)
                self.stdout.write(f"  {role_names:<12} {email:<28} {logins[email]}")
