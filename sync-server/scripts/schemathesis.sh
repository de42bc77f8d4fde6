#!/usr/bin/env bash
# Property-based API test: schemathesis (PyPI) generates requests from /api/v1/openapi.json of a
# live --dev server (temporary SQLite database, free port, signed-in bearer token) and checks
# that no response is a 5xx and every response matches the documented schema and status codes.
# Needs: python3 + pip (installs schemathesis if missing), curl, cargo (builds the server).
# Env: MAX_EXAMPLES (default 50 per operation), FITEDGE_SERVER_BIN (skip the build).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if ! command -v schemathesis > /dev/null; then
  python3 -m pip install --quiet schemathesis
fi
build_server
start_server schemathesis "sqlite://$WORK/schemathesis.db" --dev --log-format json \
  --rate-limit-address 1000000/1 --rate-limit-account 1000000/1
TOKEN="$(signed_in_token "schemathesis@example.com")"

echo "schemathesis $(schemathesis --version | awk '{print $NF}') against $BASE/api/v1/openapi.json"
CHECKS=not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance
run() {
  schemathesis run "$BASE/api/v1/openapi.json" --checks "$CHECKS" \
    --max-examples "${MAX_EXAMPLES:-50}" --seed "${SEED:-1}" --request-timeout 10 \
    --header "Authorization: Bearer $1" "${@:2}"
}
status=0
# Sign-out ends the token the other operations use: it runs last, on its own token.
run "$TOKEN" --exclude-path /api/v1/auth/logout || status=$?
run "$(signed_in_token "schemathesis-logout@example.com")" --include-path /api/v1/auth/logout || status=$?
if grep -q '"level":"error"' "$WORK/schemathesis.log"; then
  echo "the server logged errors during the run:" >&2
  grep '"level":"error"' "$WORK/schemathesis.log" | head -20 >&2
  status=1
fi
exit "$status"
