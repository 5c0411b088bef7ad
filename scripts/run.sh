#!/usr/bin/env bash
# Starts the whole platform on embedded defaults: Label Studio, migrate, demo data, one worker
# (with the periodic scheduler), the web server. Ctrl+C stops everything.
set -euo pipefail
HOST=${1:-127.0.0.1}
PORT=${2:-8000}
LS_PORT=${LS_PORT:-8080}
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export CYTOLOOP_PORT=$PORT
mkdir -p var/log var/media

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

rm -f var/label-studio/connection.json
echo "starting Label Studio on 127.0.0.1:$LS_PORT (first start migrates its database: about a minute)"
$PY -m annotation.ls_server serve --data-dir var/label-studio --port "$LS_PORT" \
  --document-root "$PWD/var/media" --connection-file var/label-studio/connection.json \
  > var/log/label-studio.log 2>&1 &
PIDS+=($!)

$PY manage.py migrate --noinput -v0
$PY manage.py seed_demo --quiet-logins

for _ in $(seq 1 240); do
  [ -f var/label-studio/connection.json ] && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { echo "Label Studio did not start: see var/log/label-studio.log"; exit 1; }
  sleep 1
done
$PY manage.py worker --beat > var/log/worker.log 2>&1 &
PIDS+=($!)

echo
echo "CytoLoop is starting at http://$HOST:$PORT/   (logs in var/log/)"
echo "Label Studio runs at http://127.0.0.1:$LS_PORT/ (admin login in var/label-studio/connection.json)"
$PY manage.py seed_demo --users-only
echo "Stop with Ctrl+C."
echo
( sleep 3; $PY manage.py labelstudio_sync > var/log/labelstudio-sync.log 2>&1 || \
    echo "Label Studio sync failed: see var/log/labelstudio-sync.log" ) &
PIDS+=($!)
$PY manage.py runserver "$HOST:$PORT" --noreload
