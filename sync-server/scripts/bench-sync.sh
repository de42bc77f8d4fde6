#!/usr/bin/env bash
# Sync benchmarks (sync-server/interop/bench.mjs) against our server or the JavaScript reference
# server, in one run each: throughput, change round-trip latency, server RSS per document,
# reconnect bytes. Prints the markdown table on stdout.
#
#   sync-server/scripts/bench-sync.sh                     # ours: release build, --dev, temp SQLite
#   sync-server/scripts/bench-sync.sh --reference         # @automerge/automerge-repo-sync-server
#   sync-server/scripts/bench-sync.sh --stored 100000     # ours, only: memory after eviction with
#                                                         # N stored documents (bench.mjs --only e)
#   sync-server/scripts/bench-sync.sh -- --clients 10 ... # arguments after -- go to bench.mjs
#
# --stored N starts the server with --sync-idle-secs 0 --sync-evict-every-secs 1 and its eviction
# sweeps logged (RUST_LOG=warn,fitedge_server::sync::evict=debug); bench.mjs stores N documents
# and samples VmRSS at 0, 10, 25, 50, 75 and 100 % of N, each time after every client closed and
# a sweep reported nothing loaded; flat = within 10 % (--flat-margin-pct) of the 10 % sample.
# About 2 minutes for 100,000 (~1,000 stored per second here), plus the release build.
#
# Environment: FITEDGE_SERVER_BIN (skip the build), BENCH_USERS (users whose tokens the clients
# share round robin, default 1), BENCH_JSON (also write the raw numbers to this file).
set -euo pipefail

MODE=ours
STORED=""
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --reference) MODE=reference; shift ;;
    --stored)
      [ $# -ge 2 ] && [[ "$2" =~ ^[1-9][0-9]*$ ]] \
        || { echo "bench-sync.sh: --stored needs a positive number of documents" >&2; exit 2; }
      STORED="$2"; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "bench-sync.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$STORED" ] && [ "$MODE" = reference ]; then
  # The reference server keeps every document it has seen in memory (no eviction), and at its
  # ~53 documents/s 100,000 would take over half an hour.
  echo "bench-sync.sh: --stored measures our server's eviction; not with --reference" >&2
  exit 2
fi

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
  SERVER_ARGS=(--dev --hash-cost insecure-fast --rate-limit-address 1000000/1 --rate-limit-account 1000000/1 --sync-rate-limit 1000000/1)
  if [ -n "$STORED" ]; then
    SERVER_ARGS+=(--sync-idle-secs 0 --sync-evict-every-secs 1)
    export RUST_LOG="${RUST_LOG:-warn},fitedge_server::sync::evict=debug"
  fi
  start_server ours "sqlite://$WORK/bench.db" "${SERVER_ARGS[@]}"
  echo "== fitedge-server (pid ${SERVER_PIDS[0]}) on $BASE" >&2
  TOKENS=""
  for i in $(seq 1 "${BENCH_USERS:-1}"); do
    tok="$(signed_in_token "bench-$i-$$@example.com")"
    TOKENS="${TOKENS:+$TOKENS,}$tok"
  done
  ARGS+=(--url "ws://127.0.0.1:$PORT/api/v1/sync" --tokens "$TOKENS" --server-pid "${SERVER_PIDS[0]}" --label fitedge-server)
  if [ -n "$STORED" ]; then
    ARGS+=(--only e --stored "$STORED" --server-log "$WORK/ours.log" --server-db "$WORK/bench.db")
    echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  fi
fi

node "$INTEROP/bench.mjs" "${ARGS[@]}" "${EXTRA[@]}"
