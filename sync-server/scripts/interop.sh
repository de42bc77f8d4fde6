#!/usr/bin/env bash
# Interoperability of the sync endpoint (GET /api/v1/sync, automerge-repo sync protocol v1) with
# the two published client implementations, the JavaScript automerge-repo (sync-server/interop/
# interop.mjs) and the Rust samod (tests/tests/sync_interop.rs), and of our device sync client
# (fitedge-core `sync_once` on a Store in a temp SQLite file, tests/tests/device_interop.rs)
# with both of them.
#
#   sync-server/scripts/interop.sh              # our server: --dev on a free port, temp SQLite,
#                                               # users registered through the REST API
#   sync-server/scripts/interop.sh --reference  # the Node and samod scenarios, no auth, against
#                                               # the JavaScript reference server (checks the harness)
#
# Scenarios: node-basic (A creates and changes, B finds and sees it, B changes, A sees it; with our
# server a second user must get doc-unavailable), samod-basic (the same with two samod clients),
# cross-node-samod (Node creates, samod finds, checks and changes it, Node sees the change).
# Our server only (the device needs a session token and GET /api/v1/sync/docs; --reference says
# they are skipped), all as user 1 (the device on one session, the other client on another):
#   device-node   the device records a workout, titles it and syncs; Node finds it (listed by the
#                 server as fitedge.workout), checks the title, writes the notes; the device syncs
#                 until its document and its workout read model have those notes.
#   node-device   Node creates a workout document; a new device learns it from the server's
#                 listing, reads it with the typed reader, writes its notes, syncs; Node sees them.
#   device-samod  device-node with samod as the other client.
#   samod-device  node-device with samod as the creator.
#
# Environment: FITEDGE_SERVER_BIN (use this server binary instead of building the release one),
# CARGO_TARGET_DIR, INTEROP_TIMEOUT_MS (bound on each wait, default 15000), INTEROP_OUT (a folder
# to keep each scenario's JSON/log in). Exits non-zero when any scenario fails.
set -euo pipefail

MODE=ours
for arg in "$@"; do
  case "$arg" in
    --reference) MODE=reference ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "interop.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"
INTEROP="$ROOT/sync-server/interop"
TIMEOUT_MS="${INTEROP_TIMEOUT_MS:-15000}"
OUT="${INTEROP_OUT:-$WORK/out}"
mkdir -p "$OUT"

# --- prerequisites, loudly ---
if ! command -v node > /dev/null 2>&1 || ! command -v npm > /dev/null 2>&1; then
  echo "interop.sh: node and npm are required (Node.js >= 20), e.g. apt-get install nodejs npm" >&2
  exit 1
fi
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$NODE_MAJOR" -lt 20 ]; then
  echo "interop.sh: Node.js >= 20 is required, found $(node --version)" >&2
  exit 1
fi
for tool in curl python3 cargo; do
  command -v "$tool" > /dev/null 2>&1 || { echo "interop.sh: $tool is required" >&2; exit 1; }
done
if [ ! -d "$INTEROP/node_modules" ]; then
  echo "== npm install (from package-lock.json) in sync-server/interop" >&2
  (cd "$INTEROP" && npm install --no-audit --no-fund --no-save) >&2
fi

echo "== building the samod and device clients (cargo test --no-run -p fitedge-tests --test sync_interop --test device_interop)" >&2
TEST_BINS="$(cd "$ROOT" && cargo test -q -p fitedge-tests --test sync_interop --test device_interop --no-run --message-format=json \
  | python3 -c 'import json,sys
exe={m["target"]["name"]: m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m.get("executable")}
print(exe.get("sync_interop", "")); print(exe.get("device_interop", ""))')"
SAMOD_BIN="$(sed -n 1p <<< "$TEST_BINS")"
DEVICE_BIN="$(sed -n 2p <<< "$TEST_BINS")"
[ -x "${SAMOD_BIN:-}" ] || { echo "interop.sh: could not find the sync_interop test binary" >&2; exit 1; }
[ -x "${DEVICE_BIN:-}" ] || { echo "interop.sh: could not find the device_interop test binary" >&2; exit 1; }

# --- the server ---
TOKEN_A="" TOKEN_B="" TOKEN_OTHER=""
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
  WS_URL="ws://127.0.0.1:$PORT"
  echo "== reference server @automerge/automerge-repo-sync-server on $WS_URL (no auth)" >&2
else
  echo "== building fitedge-server (release; FITEDGE_SERVER_BIN skips this)" >&2
  build_server
  start_server ours "sqlite://$WORK/sync.db" --dev --hash-cost insecure-fast \
    --rate-limit-address 1000000/1 --rate-limit-account 1000000/1 --sync-rate-limit 1000000/1
  WS_URL="ws://127.0.0.1:$PORT/api/v1/sync"
  echo "== fitedge-server --dev on $BASE, sync endpoint $WS_URL" >&2
  PW="correct horse battery!"
  register() {
    local email="$1" tok
    tok="$(curl -fsS -X POST "$BASE/api/v1/auth/register" -H 'content-type: application/json' \
      -d "{\"email\":\"$email\",\"password\":\"$PW\",\"birth_date\":\"1990-01-01\",\"display_name\":\"Interop\"}" \
      | json_field dev_token)"
    curl -fsS -X POST "$BASE/api/v1/auth/verify-email" -H 'content-type: application/json' \
      -d "{\"token\":\"$tok\"}" > /dev/null
  }
  login() {
    curl -fsS -X POST "$BASE/api/v1/auth/login" -H 'content-type: application/json' \
      -d "{\"email\":\"$1\",\"password\":\"$PW\"}" | json_field access_token
  }
  U1="interop-user1-$$@example.com"
  U2="interop-user2-$$@example.com"
  register "$U1" || { echo "interop.sh: registering $U1 failed" >&2; exit 1; }
  register "$U2" || { echo "interop.sh: registering $U2 failed" >&2; exit 1; }
  TOKEN_A="$(login "$U1")"
  TOKEN_B="$(login "$U1")"
  TOKEN_OTHER="$(login "$U2")"
  [ -n "$TOKEN_A" ] && [ -n "$TOKEN_B" ] && [ -n "$TOKEN_OTHER" ] \
    || { echo "interop.sh: signing in failed" >&2; exit 1; }
  echo "== registered $U1 (two sessions) and $U2" >&2
fi

# --- the scenarios ---
PASSED=0 FAILED=0 FAILED_NAMES=()
run() {
  local name="$1"; shift
  echo "== scenario $name" >&2
  local rc=0
  "$@" > "$OUT/$name.out" 2> "$OUT/$name.err" || rc=$?
  if [ "$rc" -eq 0 ]; then
    PASSED=$((PASSED + 1)); echo "   PASS $name" >&2
  else
    FAILED=$((FAILED + 1)); FAILED_NAMES+=("$name"); echo "   FAIL $name (exit $rc)" >&2
    echo "---- $name stdout ----" >&2; tail -c 6000 "$OUT/$name.out" >&2 || true
    echo "---- $name stderr ----" >&2; tail -c 6000 "$OUT/$name.err" >&2 || true
  fi
}

NODE_ARGS=(--url "$WS_URL" --timeout-ms "$TIMEOUT_MS")
[ -n "$TOKEN_A" ] && NODE_ARGS+=(--token-a "$TOKEN_A" --token-b "$TOKEN_B" --token-other "$TOKEN_OTHER")
export FITEDGE_INTEROP_URL="$WS_URL" FITEDGE_INTEROP_TIMEOUT_MS="$TIMEOUT_MS"
export FITEDGE_INTEROP_TOKEN="$TOKEN_A" FITEDGE_INTEROP_TOKEN_B="$TOKEN_B" FITEDGE_INTEROP_TOKEN_OTHER="$TOKEN_OTHER"

run node-basic node "$INTEROP/interop.mjs" "${NODE_ARGS[@]}"
run samod-basic "$SAMOD_BIN" --ignored --exact samod_basic --nocapture
# The Node side hands FITEDGE_INTEROP_TOKEN (its token B, user 1) to the samod peer.
run cross-node-samod node "$INTEROP/interop.mjs" "${NODE_ARGS[@]}" --scenario cross \
  --peer-cmd "'$SAMOD_BIN' --ignored --exact samod_cross_peer --nocapture"

# Our device client with each of them. The driver of each scenario runs the other side as a child
# process (FITEDGE_INTEROP_PEER_CMD, or --peer-cmd for Node) and hands it the document's URL, the
# field to check and the value to write in FITEDGE_INTEROP_* variables, with token B (user 1).
DEVICE_SCENARIOS="device-node node-device device-samod samod-device"
SKIPPED=0
if [ "$MODE" = ours ]; then
  NODE_PEER="node '$INTEROP/interop.mjs' --url '$WS_URL' --timeout-ms $TIMEOUT_MS --scenario peer"
  SAMOD_PEER="'$SAMOD_BIN' --ignored --exact samod_cross_peer --nocapture"
  DEVICE_PEER="'$DEVICE_BIN' --ignored --exact device_peer --nocapture"
  run device-node env FITEDGE_INTEROP_PEER_CMD="$NODE_PEER" \
    "$DEVICE_BIN" --ignored --exact device_creates --nocapture
  run node-device node "$INTEROP/interop.mjs" "${NODE_ARGS[@]}" --scenario cross --doc workout \
    --peer-cmd "$DEVICE_PEER"
  run device-samod env FITEDGE_INTEROP_PEER_CMD="$SAMOD_PEER" \
    "$DEVICE_BIN" --ignored --exact device_creates --nocapture
  run samod-device env FITEDGE_INTEROP_PEER_CMD="$DEVICE_PEER" \
    "$SAMOD_BIN" --ignored --exact samod_creates --nocapture
else
  SKIPPED=4
  echo "== SKIPPED for the reference server: $DEVICE_SCENARIOS (our device client signs in with a" \
    "session token and learns its documents from GET /api/v1/sync/docs; the reference server has" \
    "neither)" >&2
fi

if [ "$MODE" = ours ] && ! kill -0 "${SERVER_PIDS[0]}" 2> /dev/null; then
  echo "interop.sh: the server exited during the run; its log:" >&2
  tail -50 "$WORK/ours.log" >&2
  FAILED=$((FAILED + 1)); FAILED_NAMES+=("server-alive")
fi
[ "$MODE" = ours ] && cp "$WORK/ours.log" "$OUT/server.log" 2> /dev/null || true

if [ "$SKIPPED" -gt 0 ]; then
  echo "interop ($MODE): $PASSED passed, $FAILED failed; skipped: $DEVICE_SCENARIOS (reference server: no auth, no document listing)"
else
  echo "interop ($MODE): $PASSED passed, $FAILED failed"
fi
if [ "$FAILED" -gt 0 ]; then
  echo "failed: ${FAILED_NAMES[*]}" >&2
  [ -n "${INTEROP_OUT:-}" ] || echo "(set INTEROP_OUT=DIR to keep each scenario's output)" >&2
  exit 1
fi
