# Shared by the scripts in this folder: build the release binary, start a server on a free port,
# stop it on exit. Source it; not meant to run alone.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${FITEDGE_SERVER_BIN:-$TARGET_DIR/release/fitedge-server}"
WORK="$(mktemp -d -t fitedge-server-XXXXXX)"
SERVER_PIDS=()

build_server() {
  if [ -z "${FITEDGE_SERVER_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p fitedge-server)
  fi
  [ -x "$BIN" ] || { echo "no server binary at $BIN" >&2; exit 1; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_server NAME DATABASE_URL EXTRA_ARGS... ; sets PORT and BASE
start_server() {
  local name="$1" url="$2"; shift 2
  PORT="$(free_port)"
  BASE="http://127.0.0.1:$PORT"
  DATABASE_URL="$url" RUST_LOG="${RUST_LOG:-warn}" "$BIN" --bind "127.0.0.1:$PORT" "$@" \
    > "$WORK/$name.log" 2>&1 &
  SERVER_PIDS+=("$!")
  for _ in $(seq 1 100); do
    if curl -fsS "$BASE/healthcheck" > /dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "server $name did not start; its log:" >&2
  cat "$WORK/$name.log" >&2
  exit 1
}

stop_servers() {
  for pid in "${SERVER_PIDS[@]}"; do
    kill -TERM "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
  done
  SERVER_PIDS=()
}

cleanup() {
  stop_servers
  if [ -n "${PG_TEST_DB:-}" ]; then
    psql "${FITEDGE_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}" -qc \
      "DROP DATABASE IF EXISTS $PG_TEST_DB WITH (FORCE)" > /dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

new_uuid() { python3 -c 'import uuid; print(uuid.uuid4())'; }

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# signed_in_token EMAIL: registers (dev mode), verifies and signs in; prints the bearer token.
signed_in_token() {
  local email="$1" pw="correct horse battery!" tok
  tok="$(curl -fsS -X POST "$BASE/api/v1/auth/register" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$pw\",\"birth_date\":\"1990-01-01\",\"display_name\":\"Load\"}" \
    | json_field dev_token)"
  curl -fsS -X POST "$BASE/api/v1/auth/verify-email" -H 'content-type: application/json' \
    -d "{\"token\":\"$tok\"}" > /dev/null
  curl -fsS -X POST "$BASE/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$pw\"}" | json_field access_token
}
