#!/usr/bin/env bash
# Sync benchmarks (sync-server/interop/bench.mjs) against our server or the JavaScript reference
# server, in one run each: throughput, change round-trip latency, server RSS per document,
# reconnect bytes. Prints the markdown table on stdout.
#
#   sync-server/scripts/bench-sync.sh                     # ours: release build, --dev, temp SQLite
#   sync-server/scripts/bench-sync.sh --reference         # @automerge/automerge-repo-sync-server
#   sync-server/scripts/bench-sync.sh -- --clients 10 ... # arguments after -- go to bench.mjs
#
# Environment: FITEDGE_SERVER_BIN (skip the build), BENCH_USERS (users whose tokens the clients
# share round robin, default 1), BENCH_JSON (also write the raw numbers to this file).
set -euo pipefail

MODE=ours
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --reference) MODE=reference; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "bench-sync.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
INTEROP="$ROOT/sync-server/interop"

if ! command -v node > /dev/null 2>&1 || ! command -v npm > /dev/null 2>&1; then
  echo "bench-sync.sh: node and npm are required (Node.js >= 20), e.g. apt-get install nodejs npm" >&2
  exit 1
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "bench-sync.sh: Node.js >= 20 is required, found $(node --version)" >&2
  exit 1
fi
if [ ! -d "$INTEROP/node_modules" ]; then
  (cd "$INTEROP" && npm install --no-audit --no-fund --no-save) >&2
fi

ARGS=()
[ -n "${BENCH_JSON:-}" ] && ARGS+=(--json "$BENCH_JSON")
if [ "$MODE" = reference ]; then
  PORT="$(free_port)"
  mkdir -p "$WORK/reference-data"
  PORT="$PORT" DATA_DIR="$WORK/reference-data" \
    node "$INTEROP/node_modules/@automerge/automerge-repo-sync-server/src/index.js" \
    > "$WORK/reference.log" 2>&1 &
  SERVER_PIDS+=("$!")
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$PORT/" > /dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$PORT/" > /dev/null 2>&1 \
    || { echo "reference server did not start; its log:" >&2; cat "$WORK/reference.log" >&2; exit 1; }
  echo "== reference server (node, pid ${SERVER_PIDS[0]}) on port $PORT" >&2
  ARGS+=(--url "ws://127.0.0.1:$PORT" --server-pid "${SERVER_PIDS[0]}" --label reference)
else
  build_server
  start_server ours "sqlite://$WORK/bench.db" --dev --hash-cost insecure-fast \
    --rate-limit-address 1000000/1 --rate-limit-account 1000000/1
  echo "== fitedge-server (pid ${SERVER_PIDS[0]}) on $BASE" >&2
  TOKENS=""
  for i in $(seq 1 "${BENCH_USERS:-1}"); do
    tok="$(signed_in_token "bench-$i-$$@example.com")"
    TOKENS="${TOKENS:+$TOKENS,}$tok"
  done
  ARGS+=(--url "ws://127.0.0.1:$PORT/api/v1/sync" --tokens "$TOKENS" --server-pid "${SERVER_PIDS[0]}" --label fitedge-server)
fi

node "$INTEROP/bench.mjs" "${ARGS[@]}" "${EXTRA[@]}"
