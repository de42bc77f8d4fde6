#!/usr/bin/env bash
# Load test with wrk (Debian package; installed if missing) against a live release server, on
# SQLite (temporary file) and on PostgreSQL (throwaway database, FITEDGE_TEST_PG_URL or the
# local default). Measures:
#   - GET /api/v1/me with a bearer token (an authenticated read: token hash lookup + profile);
#   - POST /api/v1/auth/login (bounded by the deliberate argon2id cost: 19 MiB, 2 passes).
# Prints requests/s and p99 for each, and fails when the authenticated read is below
# MIN_RPS (default 10000) or its p99 above MAX_P99_MS (default 10) on either backend
# (ENFORCE=0 only reports). Env: DURATION (default 10s), CONNECTIONS (default 32),
# THREADS (default 2), BACKENDS (default "sqlite postgres").
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if ! command -v wrk > /dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y wrk > /dev/null 2>&1 || (apt-get update > /dev/null && apt-get install -y wrk > /dev/null))
  else
    sudo apt-get install -y wrk > /dev/null
  fi
fi
build_server

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
MIN_RPS="${MIN_RPS:-10000}"
MAX_P99_MS="${MAX_P99_MS:-10}"
ENFORCE="${ENFORCE:-1}"
PG_MAINT="${FITEDGE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

cat > "$WORK/login.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"load@example.com","password":"correct horse battery!"}'
LUA

# wrk_run NAME ARGS... -> prints "rps p99_ms non2xx"
wrk_run() {
  local name="$1"; shift
  wrk --latency "$@" > "$WORK/$name.wrk" 2>&1 || { cat "$WORK/$name.wrk" >&2; exit 1; }
  python3 - "$WORK/$name.wrk" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
print(f"{rps:.0f} {p99:.2f} {bad.group(1) if bad else 0}")
PY
}

failed=0
printf '%-9s %-22s %12s %10s %8s\n' backend endpoint "requests/s" "p99 (ms)" non-2xx
for backend in ${BACKENDS:-sqlite postgres}; do
  case "$backend" in
    sqlite) url="sqlite://$WORK/load.db" ;;
    postgres)
      PG_TEST_DB="fitedge_load_$(new_uuid | tr -d - | cut -c1-12)"
      psql "$PG_MAINT" -qc "CREATE DATABASE $PG_TEST_DB" > /dev/null || {
        echo "PostgreSQL is required for the load test and is not reachable at $PG_MAINT" >&2; exit 1; }
      url="${PG_MAINT%/*}/$PG_TEST_DB" ;;
    *) echo "unknown backend $backend" >&2; exit 2 ;;
  esac
  start_server "load-$backend" "$url" --dev --log-format json \
    --rate-limit-address 100000000/1 --rate-limit-account 100000000/1
  TOKEN="$(signed_in_token "load@example.com")"
  # Warm-up, then the measured run.
  wrk -t1 -c4 -d2s -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/me" > /dev/null
  read -r rps p99 bad < <(wrk_run "me-$backend" -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
    -H "Authorization: Bearer $TOKEN" "$BASE/api/v1/me")
  printf '%-9s %-22s %12s %10s %8s\n' "$backend" "GET /api/v1/me" "$rps" "$p99" "$bad"
  if [ "$bad" != 0 ] || python3 -c "import sys; sys.exit(0 if $rps >= $MIN_RPS and $p99 <= $MAX_P99_MS else 1)"; then :; else failed=1; fi
  [ "$bad" = 0 ] || failed=1
  read -r lrps lp99 lbad < <(wrk_run "login-$backend" -t1 -c4 -d"$DURATION" -s "$WORK/login.lua" \
    "$BASE/api/v1/auth/login")
  printf '%-9s %-22s %12s %10s %8s\n' "$backend" "POST /api/v1/auth/login" "$lrps" "$lp99" "$lbad"
  stop_servers
  if [ "$backend" = postgres ]; then
    psql "$PG_MAINT" -qc "DROP DATABASE IF EXISTS $PG_TEST_DB WITH (FORCE)" > /dev/null || true
    PG_TEST_DB=""
  fi
done
echo "(wrk -t$THREADS -c$CONNECTIONS -d$DURATION for the read; -t1 -c4 for sign-in; $(nproc) cores, server and wrk on the same machine)"
if [ "$failed" = 1 ]; then
  if [ "$ENFORCE" = 1 ]; then
    echo "FAILED: the authenticated read must sustain >= $MIN_RPS requests/s with p99 <= $MAX_P99_MS ms and no errors" >&2
    exit 1
  fi
  echo "below target (ENFORCE=0: reported only)"
fi
