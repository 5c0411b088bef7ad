#!/usr/bin/env bash
# Starts the whole platform on embedded defaults: migrate, demo data, one worker, the web server.
set -euo pipefail
HOST=${1:-127.0.0.1}
PORT=${2:-8000}
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p var/log

$PY manage.py migrate --noinput -v0
$PY manage.py seed_demo --quiet-logins

$PY manage.py worker > var/log/worker.log 2>&1 &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT INT TERM

echo
echo "CytoLoop is starting at http://$HOST:$PORT/  (worker log: var/log/worker.log)"
$PY manage.py seed_demo --users-only
echo "Stop with Ctrl+C."
echo
$PY manage.py runserver "$HOST:$PORT" --noreload
