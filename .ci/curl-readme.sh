#!/usr/bin/env bash
# Runs the README's "Try it with curl" block, as written, with curl against
# `target/debug/reprise dev` (built by `cargo test`) on a temp SQLite
# database: the API over HTTP (Connect JSON). The block is the first ```sh
# fence after the "## Try it with curl" heading; only its address
# 127.0.0.1:50051 is changed, to a free port. It runs under `bash -eu` with a
# time limit, so every call the block makes with `call` must succeed.
# Afterwards a few lines check what the block left behind. Exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${REPRISE_BIN:-target/debug/reprise}"
if [[ ! -x "$binary" ]]; then
  echo "FATAL: $binary is missing; run \`cargo test\` (or \`cargo build\`) first" >&2
  exit 1
fi
command -v curl >/dev/null || { echo "FATAL: curl is not installed" >&2; exit 1; }

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

awk '
  /^## Try it with curl/ { section = 1; next }
  section && /^## / { exit }
  section && !inblock && /^```sh$/ { inblock = 1; next }
  inblock && /^```$/ { exit }
  inblock { print }
' README.md >"$work/readme-block.sh"
calls=$(grep -c '^[^#]*call [A-Z]' "$work/readme-block.sh" || true)
if [[ "$calls" -lt 5 ]] || ! grep -q '127\.0\.0\.1:50051' "$work/readme-block.sh"; then
  echo "FATAL: no runnable curl block (with 127.0.0.1:50051) under '## Try it with curl' in README.md" >&2
  exit 1
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"
sed "s/127\.0\.0\.1:50051/$addr/g" "$work/readme-block.sh" >"$work/block.sh"
cat >>"$work/block.sh" <<'CHECKS'

# --- appended by .ci/curl-readme.sh: check what the block left behind
call ExecutionService/ListHistory '{"executionId":"'$EXECUTION_ID'"}' | python3 -c '
import json, sys
h = json.load(sys.stdin)["entries"]
assert [e["attempt"] for e in h] == [2, 1], h
assert h[1]["status"] == "EXECUTION_STATUS_ABORTED", h[1]
assert h[0]["resumedFrom"]["stageName"] == "canary", h[0]
assert h[0]["resumeReason"] == "right build", h[0]
print("history: the aborted run and its resume from canary, newest first")'
curl -sS -H 'Content-Type: application/json' -d '{"executionId":"'$EXECUTION_ID'","stageName":"canary"}' \
  -o error.json -w '%{http_code}' http://$ADDR/reprise.v1.ExecutionService/Resume | grep -qx 400
python3 -c '
import json
e = json.load(open("error.json"))
assert e["code"] == "failed_precondition", e
types = {d["type"]: d for d in e["details"]}
assert "google.rpc.PreconditionFailure" in types, e
assert types["google.rpc.ErrorInfo"]["debug"]["reason"] == "NOT_LATEST_IN_CHAIN", e
print("error: failed_precondition with its ErrorInfo (NOT_LATEST_IN_CHAIN) and PreconditionFailure details")'
call ExecutionService/ListExecutions '{"application":"shop"}' | python3 -c '
import json, sys
ex = json.load(sys.stdin)["executions"]
assert sorted(e["status"] for e in ex) == ["EXECUTION_STATUS_RUNNING", "EXECUTION_STATUS_SUCCEEDED"], ex
print("executions: the approved run SUCCEEDED, the resume is RUNNING (waiting at the gate)")'
CHECKS

echo "curl-readme: starting $binary dev on $addr"
NO_COLOR=1 "$binary" dev --listen "$addr" --database-url "sqlite://$work/reprise.db" >"$work/server.log" 2>&1 &
server_pid=$!
for i in $(seq 1 150); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "FATAL: the server exited before serving:" >&2; cat "$work/server.log" >&2; exit 1
  fi
  curl -sf -o /dev/null -H 'Content-Type: application/json' -d '{}' "http://$addr/grpc.health.v1.Health/Check" && break
  if [[ "$i" -eq 150 ]]; then echo "FATAL: the server did not answer on $addr within 30 s" >&2; exit 1; fi
  sleep 0.2
done

echo "curl-readme: running the README block ($calls calls), traced"
if ! (cd "$work" && PS4='+ ' timeout 180 bash -eux block.sh); then
  echo "curl-readme: the README block failed; the server's log ends with:" >&2
  tail -n 40 "$work/server.log" >&2
  echo "curl-readme: 0 passed, 1 failed"
  exit 1
fi
echo "curl-readme: $calls passed, 0 failed"
