#!/usr/bin/env bash
# Runs every fuzz target of the module for a while each (default 10s).
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-10s}
grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u | while read -r dir; do
  for target in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
    echo "fuzz: $dir $target ($time)"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" "$dir"
  done
done
