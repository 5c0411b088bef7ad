"""python manage.py seed_demo: demo users and demo datasets on first start (idempotent).

It lives with the demo data (annotation.demo): the platform imports no app.
"""

import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from tqdm import tqdm

from annotation.demo import seed_cric, seed_synthetic
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
        "generated passwords kept in var/demo-logins.json, a synthetic dataset (demo-synthetic) and, "
        "when CRIC_DIR holds the real CRIC images, the cric-dev dataset. Running it again changes "
        "nothing and prints the same logins."
    )

    def add_arguments(self, parser):
        parser.add_argument("--quiet-logins", action="store_true", help="do not print the logins")
        parser.add_argument("--users-only", action="store_true", help="seed the users, no datasets")
        parser.add_argument(
            "--synthetic-images", type=int, default=None,
            help="synthetic demo images on first start (default: DEMO_SYNTHETIC_IMAGES, 24)",
        )

    def handle(self, *args, quiet_logins=False, users_only=False, synthetic_images=None, **options):
        self._seed_users(quiet_logins)
        if not users_only:
            self._seed_data(synthetic_images or settings.DEMO_SYNTHETIC_IMAGES)

    def _seed_data(self, n_images: int) -> None:
        with tqdm(total=n_images, unit="image", desc="demo: synthetic images", disable=None) as bar:
            report = seed_synthetic(n_images=n_images, progress=lambda d, t: bar.update(1))
        if report is not None:
            self.stdout.write(f"demo: {report.summary()}")
        if settings.CRIC_DIR.exists():
            report = seed_cric(cric_dir=settings.CRIC_DIR)
            if report is not None:
                self.stdout.write(f"demo: {report.summary()} (real CRIC images, CC BY 4.0)")
        else:
            self.stdout.write(f"demo: no CRIC folder at {settings.CRIC_DIR}; synthetic images only")

    def _seed_users(self, quiet_logins: bool) -> None:
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
