"""Settings shared by every layer. Every URL and secret comes from the environment.

With nothing set, the platform runs on embedded defaults: SQLite under var/, Celery over
kombu's filesystem transport under var/broker (no server needed), media under var/media.
DATABASE_URL switches to PostgreSQL, REDIS_URL to Redis (broker).
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parents[3]  # repository root (platform/cytoloop/settings/..)

env = environ.Env()

VAR_DIR = Path(env.str("CYTOLOOP_VAR_DIR", default=str(BASE_DIR / "var")))

SECRET_KEY = env.str("SECRET_KEY", default="")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "django_celery_results",
    "cytoloop",
    "annotation",
    "training",
    "inference",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "cytoloop.roles.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "cytoloop.urls"
WSGI_APPLICATION = "cytoloop.wsgi.application"
ASGI_APPLICATION = "cytoloop.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "cytoloop.roles.roles_context",
            ],
        },
    },
]

# --- database: SQLite under var/ unless DATABASE_URL says otherwise ---------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded database is shared by the web server, the worker and commands (several
    # processes). SQLite allows one writer at a time; measured with simulate_experts beside a
    # consensus recompute in another process, a busy timeout alone still failed ("database is
    # locked": a transaction that starts reading and then writes cannot wait for the lock). So:
    # every transaction takes the write lock when it begins (BEGIN IMMEDIATE) and waits up to
    # `timeout` seconds for it; WAL lets readers go on while one process writes.
    _sqlite_options = DATABASES["default"].setdefault("OPTIONS", {})
    _sqlite_options.setdefault("timeout", env.int("SQLITE_BUSY_TIMEOUT_S", default=30))
    _sqlite_options.setdefault("transaction_mode", "IMMEDIATE")
    _sqlite_options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

# --- files ---------------------------------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
DATA_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 20 * 1024 * 1024

# --- API -------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CytoLoop API",
    "DESCRIPTION": "Cervical cytology annotation, consensus, training and active learning.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ----------------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
BROKER_DIR = VAR_DIR / "broker"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        # A message is redelivered when its worker did not ack it within this (acks_late): a task
        # may run this long before the broker hands it out again. A killed pool child is
        # redelivered at once (reject_on_worker_lost); a whole worker SIGKILLed is redelivered
        # after this, by when the training sweep has long marked its run interrupted and resumed it
        # (TRAINING_STALE_AFTER_S, TRAINING_AUTO_RESUME): the late copy finds the run running or
        # finished and leaves it (training.services.execute_run).
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT_S", default=4 * 3600),
        # publishing never waits on a broker that is down: no reconnect loop before a send
        # (kombu otherwise retries for ~6 s, once per enqueue, inside the person's request) and a
        # short connect timeout. The work stays recorded (outbox rows, job rows, the consensus
        # sweep) and goes out when the broker is back. Workers keep their own reconnect policy.
        "max_retries": 0,
        "socket_connect_timeout": env.float("CELERY_BROKER_CONNECT_TIMEOUT_S", default=1.0),
    }
else:
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "processed", "control"):
        (BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_CACHE_BACKEND = "django-cache"
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = ("cytoloop.queues.route_task",)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = TIME_ZONE

# --- Label Studio (configured by a later step of `make run`, or by the environment) --------------
LABEL_STUDIO_URL = env.str("LABEL_STUDIO_URL", default="")
LABEL_STUDIO_TOKEN = env.str("LABEL_STUDIO_TOKEN", default="")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # the filesystem transport has no host name; kombu warns about it on every connection
        "kombu.connection": {"level": "ERROR"},
        "httpx": {"level": "WARNING"},
    },
}

# --- demo data -------------------------------------------------------------------------------------
#: Real CRIC Pap smear images (CC BY 4.0); the demo includes them when the folder exists.
CRIC_DIR = Path(env.str("CRIC_DIR", default=str(BASE_DIR.parent / "shared" / "data" / "cric-dev")))
DEMO_SYNTHETIC_IMAGES = env.int("DEMO_SYNTHETIC_IMAGES", default=24)
#: where Label Studio sends annotation events (the platform's webhook), and the shared secret
LABEL_STUDIO_WEBHOOK_URL = env.str("LABEL_STUDIO_WEBHOOK_URL", default="")
LABEL_STUDIO_WEBHOOK_SECRET = env.str("LABEL_STUDIO_WEBHOOK_SECRET", default="")
#: minutes an image stays locked to the expert it was handed to
ANNOTATION_LOCK_MINUTES = env.int("ANNOTATION_LOCK_MINUTES", default=30)
#: minutes an image a reviewer sent to one more expert is held for that expert (who may not be
#: online yet: half a working day); after that any pathologist who has not annotated it may take it
EXTRA_EXPERT_LOCK_MINUTES = env.int("EXTRA_EXPERT_LOCK_MINUTES", default=240)

CELERY_BEAT_SCHEDULE = {
    "flush-label-studio-outbox": {"task": "annotation.flush_outbox", "schedule": 30.0},
    "reconcile-label-studio": {"task": "annotation.reconcile_label_studio", "schedule": 300.0},
    #: enqueues the broker did not take (cytoloop.jobs.enqueue_on_commit), sent once it is back
    "send-pending-enqueues": {"task": "cytoloop.send_pending_enqueues", "schedule": 30.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# --- consensus -------------------------------------------------------------------------------------
CONSENSUS_IOU_THRESHOLD = env.float("CONSENSUS_IOU_THRESHOLD", default=0.5)
#: None: a strict majority of the image's experts
CONSENSUS_QUORUM = env.int("CONSENSUS_QUORUM", default=0) or None
CONSENSUS_WEAK_IOU = env.float("CONSENSUS_WEAK_IOU", default=0.6)
CONSENSUS_BOX_METHOD = env.str("CONSENSUS_BOX_METHOD", default="medoid")  # or weighted_mean
CONSENSUS_WEIGHTING = env.str("CONSENSUS_WEIGHTING", default="equal")  # or reliability
#: "model": a model pre-annotation accepted unchanged is the model's vote (once, never toward the
#: quorum); "expert": it counts as the accepting expert's own vote
CONSENSUS_MODEL_BOXES = env.str("CONSENSUS_MODEL_BOXES", default="model")
#: reviewers may not resolve clusters on images they annotated themselves
REVIEWERS_MAY_RESOLVE_OWN_IMAGES = env.bool("REVIEWERS_MAY_RESOLVE_OWN_IMAGES", default=False)
CELERY_BEAT_SCHEDULE["consensus-sweep"] = {"task": "annotation.consensus_sweep", "schedule": 120.0}
#: show model pre-annotations in the annotate editor (rounds that allow it); blind by default
ANNOTATE_SHOW_PREDICTIONS = env.bool("ANNOTATE_SHOW_PREDICTIONS", default=False)

# --- training --------------------------------------------------------------------------------------
#: hard limit of one training task on a worker (the run's own time limit stops it gracefully first)
TRAINING_TIME_LIMIT_S = env.int("TRAINING_TIME_LIMIT_S", default=24 * 3600)
#: promoting a version below these test figures (or worse than the promoted one) asks for an
#: explicit confirmation (training.promotion): classifier macro-F1, detector mAP@0.5
PROMOTION_MIN_MACRO_F1 = env.float("PROMOTION_MIN_MACRO_F1", default=0.5)
PROMOTION_MIN_MAP = env.float("PROMOTION_MIN_MAP", default=0.25)
#: a killed worker's run is noticed within a minute: a running run writes its heartbeat every
#: TRAINING_HEARTBEAT_S (training.services.Heartbeat), the beat sweeps every TRAINING_SWEEP_S and
#: marks "interrupted" a run silent for TRAINING_STALE_AFTER_S; with TRAINING_AUTO_RESUME the sweep
#: queues it again once (it continues from its last good checkpoint), after that Resume does.
TRAINING_HEARTBEAT_S = env.float("TRAINING_HEARTBEAT_S", default=5.0)
TRAINING_STALE_AFTER_S = env.float("TRAINING_STALE_AFTER_S", default=45.0)
TRAINING_SWEEP_S = env.float("TRAINING_SWEEP_S", default=15.0)
TRAINING_AUTO_RESUME = env.bool("TRAINING_AUTO_RESUME", default=True)
CELERY_BEAT_SCHEDULE["training-mark-interrupted"] = {"task": "training.mark_interrupted",
                                                     "schedule": TRAINING_SWEEP_S}
