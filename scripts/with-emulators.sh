#!/usr/bin/env bash
# Runs a command with the gcloud Pub/Sub emulator started (when gcloud has it
# and PUBSUB_EMULATOR_HOST is not already set), exporting its address, and
# stops it afterwards. With CI=true (or LETHE_REQUIRE_EMULATORS=1) a missing
# emulator is an error: emulator suites must run in CI, never skip.
set -euo pipefail
cd "$(dirname "$0")/.."
require=${LETHE_REQUIRE_EMULATORS:-}
[ "${CI:-}" = true ] && require=1
pids=()
cleanup() { for p in "${pids[@]}"; do kill -- -"$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null || echo "$1"; }

wait_http() { # url seconds
  for _ in $(seq 1 "$2"); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 1; done; return 1
}

if [ -z "${PUBSUB_EMULATOR_HOST:-}" ]; then
  if command -v gcloud >/dev/null 2>&1 && gcloud beta emulators pubsub env-init --help >/dev/null 2>&1; then
    port=$(free_port 8085)
    mkdir -p .emulators
    setsid gcloud beta emulators pubsub start --host-port="127.0.0.1:$port" --project=lethe-test \
      >.emulators/pubsub.log 2>&1 &
    pids+=($!)
    if wait_http "http://127.0.0.1:$port/" 90; then
      export PUBSUB_EMULATOR_HOST="127.0.0.1:$port"
      echo "with-emulators: Pub/Sub emulator on $PUBSUB_EMULATOR_HOST" >&2
    else
      echo "with-emulators: Pub/Sub emulator did not start; log:" >&2; tail -20 .emulators/pubsub.log >&2
      [ -n "$require" ] && exit 1
    fi
  elif [ -n "$require" ]; then
    echo "with-emulators: gcloud Pub/Sub emulator not installed, and emulator suites are required" >&2
    exit 1
  else
    echo "with-emulators: no gcloud Pub/Sub emulator; its suites will be skipped (CI requires them)" >&2
  fi
fi
if [ -z "${FIRESTORE_EMULATOR_HOST:-}" ]; then
  if command -v gcloud >/dev/null 2>&1 && [ -d "$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null)/platform/cloud-firestore-emulator" ]; then
    port=$(free_port 8086)
    mkdir -p .emulators
    setsid gcloud emulators firestore start --host-port="127.0.0.1:$port" --project=lethe-test \
      >.emulators/firestore.log 2>&1 &
    pids+=($!)
    if wait_http "http://127.0.0.1:$port/" 90; then
      export FIRESTORE_EMULATOR_HOST="127.0.0.1:$port"
      echo "with-emulators: Firestore emulator on $FIRESTORE_EMULATOR_HOST" >&2
    else
      echo "with-emulators: Firestore emulator did not start; log:" >&2; tail -20 .emulators/firestore.log >&2
      [ -n "$require" ] && exit 1
    fi
  elif [ -n "$require" ]; then
    echo "with-emulators: gcloud Firestore emulator not installed, and emulator suites are required" >&2
    exit 1
  else
    echo "with-emulators: no gcloud Firestore emulator; its suites will be skipped (CI requires them)" >&2
  fi
fi
[ -n "$require" ] && export LETHE_REQUIRE_EMULATORS=1
"$@"
