"""python manage.py adduser EMAIL --role reviewer [--role admin] [--password-stdin]"""

import secrets
import sys

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email
from django.db import transaction

from cytoloop.roles import Role, parse_role, set_roles


class Command(BaseCommand):
    help = (
        "Create a user, or update an existing one, with one or more roles. The email is the login. "
        "A new user without --password-stdin gets a generated password, printed once."
    )

    def add_arguments(self, parser):
        parser.add_argument("email", help="the user's email address; also their login name")
        parser.add_argument(
            "--role",
            action="append",
            required=True,
            metavar="ROLE",
            help=f"a role to give ({', '.join(r.value for r in Role)}); repeat for several",
        )
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from standard input (first line) instead of generating one",
        )
        parser.add_argument(
            "--replace-roles",
            action="store_true",
            help="the user holds exactly the roles given (default: add them to those held)",
        )
        parser.add_argument("--name", default="", help="the user's full name, shown in the pages")

    def handle(self, *args, email, role, password_stdin, replace_roles, name, **options):
        email = email.strip().lower()
        try:
            validate_email(email)
        except ValidationError:
            raise CommandError(f"not a valid email address: {email!r}") from None
        try:
            roles = [parse_role(r) for r in role]
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        password = None
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
            if not password:
                raise CommandError("--password-stdin was given but standard input held no password")

        User = get_user_model()
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=email, defaults={"email": email})
            generated = None
            if password is not None:
                user.set_password(password)
            elif created:
                generated = secrets.token_urlsafe(12)
                user.set_password(generated)
            if name:
                first, _, last = name.partition(" ")
                user.first_name, user.last_name = first, last
            user.email = email
            user.is_active = True
            user.save()
            set_roles(user, roles, replace=replace_roles)
        held = ", ".join(sorted(g for g in user.groups.values_list("name", flat=True)))
        self.stdout.write(f"{'created' if created else 'updated'} {email} (roles: {held})")
        if generated:
            self.stdout.write(f"password: {generated}")
