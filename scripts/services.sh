#!/usr/bin/env bash
# The two services a scheduled comparison uses, on localhost:
#   - an MLflow tracking server: SQLite backend store, artifacts stored and served by the server
#     (clients upload and download through http://, so they need no access to its disk);
#   - a Prefect server: deployments, schedules and the runs of `exitflow serve`.
#
# usage: scripts/services.sh start [STATE_DIR]   start both, wait until they answer, print the exports
#        scripts/services.sh stop  [STATE_DIR]   stop both
# STATE_DIR (default .services/) holds mlflow.db, mlartifacts/, the Prefect home, logs and pids.
# Ports: MLFLOW_PORT (default 5000), PREFECT_PORT (default 4200).
#
# Then, in the shell that runs exitflow:
#   export MLFLOW_TRACKING_URI=http://127.0.0.1:5000 PREFECT_API_URL=http://127.0.0.1:4200/api
#   exitflow serve            # the nightly comparison on schedule.cron
set -euo pipefail

cd "$(dirname "$0")/.."
ACTION=${1:-}
STATE=${2:-.services}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PREFECT_PORT=${PREFECT_PORT:-4200}
BIN=${EXITFLOW_BIN:-.venv/bin}
TIMEOUT_S=${SERVICES_TIMEOUT_S:-120}

wait_for() {  # url name log: on timeout, stop what this call started and fail
  local start=$SECONDS
  until curl -sf -o /dev/null "$1"; do
    if (( SECONDS - start > TIMEOUT_S )); then
      echo "error: $2 did not answer at $1 within ${TIMEOUT_S} s; its log: $3" >&2
      tail -n 20 "$3" >&2 || true
      stop_pid "$STATE/mlflow.pid"
      stop_pid "$STATE/prefect.pid"
      exit 1
    fi
    sleep 1
  done
}

port_free() {  # port name: something already listening there would pass the health check
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/"; then
    echo "error: port $1 for the $2 is already in use; stop what holds it or set ${3}=<another port>" >&2
    exit 1
  fi
}

stop_pid() {  # pidfile
  [[ -f $1 ]] || return 0
  local pid
  pid=$(cat "$1")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true  # the whole process group
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

case $ACTION in
  start)
    port_free "$MLFLOW_PORT" "MLflow server" MLFLOW_PORT
    port_free "$PREFECT_PORT" "Prefect server" PREFECT_PORT
    mkdir -p "$STATE/mlartifacts" "$STATE/prefect"
    STATE=$(cd "$STATE" && pwd)
    setsid "$BIN/mlflow" server --host 127.0.0.1 --port "$MLFLOW_PORT" \
      --backend-store-uri "sqlite:///$STATE/mlflow.db" \
      --artifacts-destination "$STATE/mlartifacts" --serve-artifacts \
      >"$STATE/mlflow.log" 2>&1 < /dev/null &
    echo $! > "$STATE/mlflow.pid"
    PREFECT_HOME="$STATE/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
      setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" \
      >"$STATE/prefect.log" 2>&1 < /dev/null &
    echo $! > "$STATE/prefect.pid"
    wait_for "http://127.0.0.1:$MLFLOW_PORT/health" "MLflow server" "$STATE/mlflow.log"
    wait_for "http://127.0.0.1:$PREFECT_PORT/api/health" "Prefect server" "$STATE/prefect.log"
    echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api"
    ;;
  stop)
    stop_pid "$STATE/mlflow.pid"
    stop_pid "$STATE/prefect.pid"
    ;;
  *)
    echo "usage: $0 start|stop [STATE_DIR]" >&2
    exit 2
    ;;
esac
