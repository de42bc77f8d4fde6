#!/usr/bin/env bash
# Booking throughput on one contended event (issue 8), against a live release server on
# PostgreSQL, with the ceiling measured in the same run on the same PostgreSQL:
#   1. a throwaway database; the release server on it (dev mode, rate limits out of the way);
#   2. one event with room for everyone, opened to the public; BENCH_USERS users with sessions
#      (inserted with SQL: signing up 30,000 people through argon2 would measure argon2);
#   3. wrk, CONNECTIONS concurrent clients (default 100), every request a different user booking
#      the same event with its own X-Idempotency-Key; reports bookings/s and p99;
#   4. checks the result in the database: held seats = bookings = seats_taken, nobody twice;
#   5. pgbench on the same PostgreSQL, a one-row `UPDATE ... SET n = n + 1` script (the ceiling
#      for a single hot row), at 16 and 64 clients, the better of the two kept.
# Fails when bookings/s < the ceiling / 4 (ENFORCE=0 only reports), when any request was not
# 201, or when the database check fails. Env: DURATION (10s), CONNECTIONS (100), THREADS (2),
# BENCH_USERS (40000), FITEDGE_TEST_PG_URL (maintenance URL, default the local server).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

for tool in wrk pgbench psql; do
  if ! command -v "$tool" > /dev/null; then
    case "$tool" in
      wrk) pkg=wrk ;;
      *) pkg=postgresql-client ;;
    esac
    if [ "$(id -u)" = 0 ]; then
      (apt-get install -y "$pkg" > /dev/null 2>&1 || (apt-get update > /dev/null && apt-get install -y "$pkg" > /dev/null)) \
        || { echo "$tool is required (Debian package $pkg) and could not be installed" >&2; exit 1; }
    else
      echo "$tool is required (Debian package $pkg)" >&2; exit 1
    fi
  fi
done
build_server

DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-100}"
THREADS="${THREADS:-2}"
BENCH_USERS="${BENCH_USERS:-40000}"
ENFORCE="${ENFORCE:-1}"
PG_MAINT="${FITEDGE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

PG_TEST_DB="fitedge_bookbench_$(new_uuid | tr -d - | cut -c1-12)"
psql "$PG_MAINT" -qc "CREATE DATABASE $PG_TEST_DB" > /dev/null || {
  echo "PostgreSQL is required for the booking benchmark and is not reachable at $PG_MAINT" >&2; exit 1; }
url="${PG_MAINT%/*}/$PG_TEST_DB"

start_server booking "$url" --dev --log-format json --hash-cost insecure-fast \
  --rate-limit-address 100000000/1 --rate-limit-account 100000000/1
ORG="$(signed_in_token "organizer@example.com")"
DATABASE_URL="$url" "$BIN" user set-role organizer@example.com partner > /dev/null

EVENT="$(python3 - "$BASE" "$ORG" <<'PY'
import datetime, json, sys, urllib.request
base, token = sys.argv[1], sys.argv[2]
now = datetime.datetime.now(datetime.timezone.utc)
iso = lambda d: (now + d).strftime("%Y-%m-%dT%H:%M:%SZ")
body = {
    "title": "Harbour 10k (benchmark)", "sport": "running",
    "venue": {"name": "Harbour", "lat": 59.9139, "lon": 10.7522},
    "starts_at": iso(datetime.timedelta(days=10)),
    "ends_at": iso(datetime.timedelta(days=10, hours=2)),
    "capacity": 1000000, "price_cents": 2000, "currency": "EUR",
    "public_opens_at": iso(datetime.timedelta(hours=-1)),
}
req = urllib.request.Request(base + "/api/v1/events", data=json.dumps(body).encode(),
    headers={"content-type": "application/json", "authorization": "Bearer " + token})
print(json.load(urllib.request.urlopen(req))["id"])
PY
)"

# Users and sessions straight into the database (session tokens are stored as SHA-256 hex).
psql "$url" -q -v ON_ERROR_STOP=1 > /dev/null <<SQL
INSERT INTO users (id, email, password_hash, display_name, birth_date, role, tier,
                   email_verified_at, created_at, updated_at)
SELECT 'bench-' || g, 'bench' || g || '@example.com', 'not-a-hash', 'Bench', '1990-01-01',
       'user', 'free', 0, 0, 0
FROM generate_series(1, $BENCH_USERS) g;
INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at)
SELECT 'bench-session-' || g, 'bench-' || g,
       encode(sha256(convert_to('bench-token-' || g, 'UTF8')), 'hex'),
       (extract(epoch from now()) * 1000)::bigint,
       (extract(epoch from now() + interval '1 day') * 1000)::bigint
FROM generate_series(1, $BENCH_USERS) g;
SQL

cat > "$WORK/book.lua" <<LUA
-- Every request: the next user of this thread (threads interleave), a fresh idempotency key.
local users, threads, event = $BENCH_USERS, $THREADS, "$EVENT"
local counter = 0
local n_threads = 0
-- tid is a global: setup() gives each thread's Lua state its own.
function setup(thread)
  thread:set("tid", n_threads)
  n_threads = n_threads + 1
end
function init(args)
  math.randomseed(os.time() + tid * 7919)
end
local function uuid4()
  local t = "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx"
  return (string.gsub(t, "[xy]", function(c)
    local v = (c == "x") and math.random(0, 15) or math.random(8, 11)
    return string.format("%x", v)
  end))
end
function request()
  local i = tid + counter * threads + 1
  counter = counter + 1
  if i > users then i = users end  -- exhausted: the repeat is a 409 and fails the run
  return wrk.format("POST", "/api/v1/events/" .. event .. "/bookings", {
    ["Authorization"] = "Bearer bench-token-" .. i,
    ["X-Idempotency-Key"] = uuid4(),
  }, "")
end
LUA

# wrk_run NAME ARGS... -> prints "rps p99_ms non2xx requests"
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
n = int(re.search(r"(\d+) requests in", t).group(1))
print(f"{rps:.0f} {p99:.2f} {bad.group(1) if bad else 0} {n}")
PY
}

load="$(cut -d' ' -f1 /proc/loadavg)"
read -r rps p99 bad requests < <(wrk_run book -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" \
  -s "$WORK/book.lua" "$BASE")
stop_servers

# What the database holds must match what was answered.
read -r held taken users_twice < <(psql "$url" -At -F' ' -c "
  SELECT (SELECT COUNT(*) FROM bookings WHERE event_id = '$EVENT' AND status = 'held'),
         (SELECT seats_taken FROM booking_events WHERE id = '$EVENT'),
         (SELECT COUNT(*) FROM (SELECT user_id FROM bookings WHERE event_id = '$EVENT'
            GROUP BY user_id HAVING COUNT(*) > 1) t)")

# The ceiling: the same PostgreSQL updating one row.
psql "$url" -q -v ON_ERROR_STOP=1 -c "CREATE TABLE hot (id INT PRIMARY KEY, n BIGINT NOT NULL);
  INSERT INTO hot VALUES (1, 0);" > /dev/null
echo 'UPDATE hot SET n = n + 1 WHERE id = 1;' > "$WORK/hot.sql"
best_tps=0
for c in 16 64; do
  tps="$(pgbench -n -c "$c" -j 2 -T "${DURATION%s}" -f "$WORK/hot.sql" "$url" 2>&1 \
    | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -1)"
  [ -n "$tps" ] || { echo "pgbench gave no tps" >&2; exit 1; }
  echo "pgbench one-row update, $c clients: $tps tps"
  best_tps="$(python3 -c "print(max($best_tps, $tps))")"
done
psql "$PG_MAINT" -qc "DROP DATABASE IF EXISTS $PG_TEST_DB WITH (FORCE)" > /dev/null || true
PG_TEST_DB=""

ratio="$(python3 -c "print(f'{$rps / $best_tps:.2f}')")"
printf '\n%-34s %12s %10s %8s\n' measure "per second" "p99 (ms)" "non-201"
printf '%-34s %12s %10s %8s\n' "bookings, one event, $CONNECTIONS clients" "$rps" "$p99" "$bad"
printf '%-34s %12s\n' "pgbench one-row update (ceiling)" "$best_tps"
echo "ratio bookings/ceiling: $ratio (target >= 0.25); $requests requests, held $held, seats_taken $taken, users with two bookings $users_twice; load average at start $load on $(nproc) cores"

failed=0
[ "$bad" = 0 ] || {
  echo "FAILED: $bad requests were not answered 201; the server's first warnings and errors:" >&2
  grep -m 5 -E '"level":"(WARN|ERROR)"' "$WORK/booking.log" >&2 || true
  failed=1; }
# wrk counts completed responses; up to one request per connection may still have been in flight.
[ "$held" = "$taken" ] && [ "$held" -ge "$requests" ] && [ "$((held - requests))" -le "$CONNECTIONS" ] \
  && [ "$users_twice" = 0 ] || {
  echo "FAILED: the database does not match the answers (requests $requests, held $held, seats_taken $taken, doubles $users_twice)" >&2; failed=1; }
if python3 -c "import sys; sys.exit(0 if $rps * 4 >= $best_tps else 1)"; then :; else
  if [ "$ENFORCE" = 1 ]; then echo "FAILED: below a quarter of the one-row ceiling" >&2; failed=1
  else echo "below target (ENFORCE=0: reported only)"; fi
fi
exit "$failed"
