#!/usr/bin/env bash
# The example clients of examples/ against one live `reprise dev` (server and
# reference worker in one process, started here from the debug binary that
# `cargo test` built). For each language asked for (default: all four):
#
#   python      grpcio-tools generates the client; the example RUNS.
#   typescript  buf + protoc-gen-es (npm) generate it; the example RUNS.
#   go          Debian's protoc, protoc-gen-go, protoc-gen-go-grpc and Go
#               packages (GOPATH mode: no Go module proxy needed); the
#               example is COMPILED and then RUN.
#   java        Debian's protoc, grpc-java plugin and jars; COMPILED with
#               javac, and RUN when Debian's netty jars are there.
#
# Every example prints its checks and `N passed, M failed`; any failure
# fails this script. A toolchain that cannot be installed (no Debian
# package reachable) skips only that language, with a loud SKIPPED line and
# the reason; it never passes a broken example. Usage:
#   .ci/clients.sh [python] [typescript] [go] [java]
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

binary="${REPRISE_BIN:-target/debug/reprise}"
if [[ ! -x "$binary" ]]; then
  echo "FATAL: $binary is missing; run \`cargo test\` (or \`cargo build\`) first" >&2
  exit 1
fi
langs=("$@")
[[ ${#langs[@]} -eq 0 ]] && langs=(python typescript go java)

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- the server -------------------------------------------------------------
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
address="127.0.0.1:$port"
mkdir -p "$work/markers"
NO_COLOR=1 "$binary" dev --listen "$address" --database-url "sqlite://$work/reprise.db" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "FATAL: reprise dev exited before serving:" >&2; cat "$work/server.log" >&2; exit 1
  fi
  sleep 0.1
done
echo "clients: reprise dev serves on $address (log: $work/server.log)"
export REPRISE_ADDRESS="$address" REPRISE_EXAMPLE_DIR="$work/markers"

# Results go to a file: each language runs in a subshell of its own (where
# `set -e` holds, which it would not in an `if` condition).
failed=0
record() { echo "$1" >>"$work/results"; }
fail() { record "$1: FAILED"; failed=1; echo "--- last lines of the server log:"; tail -n 30 "$work/server.log"; }
skip() {
  record "$1: SKIPPED ($2)"
  echo "######## SKIPPED $1: $2 ########"
}

# Debian packages, installed when a command they bring is missing. Returns
# non-zero (never exits) when they cannot be had.
apt_updated=""
need_debian() {
  local missing=()
  for pair in "$@"; do
    local cmd="${pair%%=*}" pkg="${pair#*=}"
    if [[ "$cmd" == /* ]]; then [[ -e "$cmd" ]] || missing+=("$pkg")
    else command -v "$cmd" >/dev/null || missing+=("$pkg"); fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "clients: installing Debian packages: ${missing[*]}"
  if [[ -z "$apt_updated" ]]; then apt-get update -qq >/dev/null 2>&1 || return 1; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1
}

# A venv with grpcio-tools and grpcio-status; also where the google/rpc
# .proto files come from (googleapis-common-protos ships them).
venv="$work/venv"
python_venv() {
  [[ -x "$venv/bin/python" ]] && return 0
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    grpcio==1.85.3 grpcio-tools==1.85.1 grpcio-status==1.85.1 googleapis-common-protos==1.76.0
}
google_rpc_protos() {
  python_venv >/dev/null
  "$venv/bin/python" -c 'import google.rpc, os; print(os.path.dirname(os.path.dirname(list(google.rpc.__path__)[0])))'
}

# --- Python -------------------------------------------------------------------
run_python() {
  python_venv
  local gen="$work/python-gen"
  mkdir -p "$gen"
  "$venv/bin/python" -m grpc_tools.protoc -I proto --python_out="$gen" --pyi_out="$gen" \
    --grpc_python_out="$gen" proto/reprise/v1/*.proto
  PYTHONPATH="$gen" "$venv/bin/python" examples/python/resume_scenario.py
}

# --- TypeScript ---------------------------------------------------------------
run_typescript() {
  local dir="$work/typescript"
  cp -r examples/typescript "$dir"
  rm -rf "$dir/node_modules" "$dir/gen"
  (
    cd "$dir"
    npm ci --no-audit --no-fund --loglevel=error
    REPRISE_PROTO="$repo/proto" npm run --silent generate
    npm run --silent typecheck
    npm start --silent
  )
}

# --- Go -----------------------------------------------------------------------
run_go() {
  if ! need_debian go=golang-go protoc=protobuf-compiler protoc-gen-go-grpc=protoc-gen-go-grpc \
      /usr/share/gocode/src/google.golang.org/grpc=golang-google-grpc-dev \
      /usr/share/gocode/src/google.golang.org/genproto=golang-google-genproto-dev \
      /usr/share/gocode/src/google.golang.org/protobuf=golang-google-protobuf-dev \
      /usr/share/gocode/src/github.com/golang/protobuf/proto/registry.go=golang-github-golang-protobuf-1-5-dev; then
    skip go "Debian's golang-go / protobuf-compiler / protoc-gen-go-grpc / golang-google-{grpc,genproto,protobuf}-dev could not be installed"
    return 0
  fi
  local gopath="$work/gopath"
  mkdir -p "$gopath/src/example.com/resume" "$work/bin"
  export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOFLAGS= GOCACHE="$work/gocache"
  # Debian's /usr/bin/protoc-gen-go is the old 1.3 generator; build the
  # current one from the runtime's own source, which Debian ships.
  go build -o "$work/bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
  # go_package "reprise.dev/go/reprise/v1": plain protoc puts the package at
  # $GOPATH/src/reprise.dev/go/reprise/v1.
  PATH="$work/bin:$PATH" protoc -I proto --go_out="$gopath/src" --go-grpc_out="$gopath/src" proto/reprise/v1/*.proto
  cp examples/go/main.go "$gopath/src/example.com/resume/"
  (cd "$gopath/src/example.com/resume" && go vet . && go build -o "$work/resume-go" .)
  echo "go: compiled with $(go version | cut -d' ' -f3) in GOPATH mode against Debian's grpc-go $(dpkg-query -W -f='${Version}' golang-google-grpc-dev)"
  "$work/resume-go"
}

# --- Java ---------------------------------------------------------------------
java_jars() {
  local jars=() j
  for j in protobuf grpc-api grpc-stub grpc-protobuf grpc-protobuf-lite grpc-core grpc-context guava \
      failureaccess error_prone_annotations perfmark-api geronimo-annotation-1.3-spec "$@"; do
    [[ -e "/usr/share/java/$j.jar" ]] && jars+=("/usr/share/java/$j.jar")
  done
  (IFS=:; echo "${jars[*]}")
}
run_java() {
  if ! need_debian protoc=protobuf-compiler javac=default-jdk-headless grpc_java_plugin=protobuf-compiler-grpc-java-plugin \
      /usr/share/java/grpc-stub.jar=libgrpc-java /usr/share/java/protobuf.jar=libprotobuf-java \
      /usr/share/java/geronimo-annotation-1.3-spec.jar=libgeronimo-annotation-1.3-spec-java; then
    skip java "Debian's protobuf-compiler / protobuf-compiler-grpc-java-plugin / libgrpc-java could not be installed"
    return 0
  fi
  local rpc gen="$work/java-gen" classes="$work/java-classes"
  rpc="$(google_rpc_protos)"
  mkdir -p "$gen" "$classes"
  # grpc-java 1.41's stubs carry @javax.annotation.Generated, which Java 11+
  # no longer has: Geronimo's annotation jar provides it.
  # Debian ships no com.google.rpc jar (proto-google-common-protos): generate
  # the two google.rpc files the example decodes, as that jar holds them.
  protoc -I proto -I "$rpc" --java_out="$gen" --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin \
    --grpc-java_out="$gen" proto/reprise/v1/*.proto
  protoc -I "$rpc" --java_out="$gen" google/rpc/status.proto google/rpc/error_details.proto
  local cp
  cp="$(java_jars)"
  find "$gen" examples/java/src -name '*.java' >"$work/java-sources"
  javac -nowarn -encoding UTF-8 -d "$classes" -cp "$cp" @"$work/java-sources" 2>&1 | grep -v '^Note:' || true
  if [[ ! -f "$classes/dev/reprise/examples/ResumeScenario.class" ]]; then
    echo "java: javac failed"; return 1
  fi
  echo "java: compiled with $(javac -version 2>&1) against Debian's grpc-java $(dpkg-query -W -f='${Version}' libgrpc-java)"
  # Running needs a transport: grpc-netty and Debian's netty.
  if ! need_debian /usr/share/java/netty-codec-http2.jar=libnetty-java /usr/share/java/perfmark-api.jar=libperfmark-java; then
    skip java-run "compiled, not run: Debian's libnetty-java / libperfmark-java could not be installed"
    return 0
  fi
  cp="$(java_jars)" # again: perfmark-api may have just been installed
  local netty j
  netty="/usr/share/java/grpc-netty.jar"
  for j in transport buffer common codec codec-http codec-http2 handler resolver handler-proxy codec-socks; do
    netty="$netty:/usr/share/java/netty-$j.jar"
  done
  java -cp "$classes:$cp:$netty" dev.reprise.examples.ResumeScenario
}

# --- buf.gen.local.yaml -----------------------------------------------------------
# Once the languages above installed its plugins: the local template must
# generate all of Go, Java and TypeScript.
run_buf_local() {
  local bin="$work/bin" ts="$work/typescript/node_modules/.bin"
  if [[ ! -x "$bin/protoc-gen-go" || ! -x "$ts/buf" ]] || ! command -v grpc_java_plugin >/dev/null; then
    skip buf.gen.local.yaml "needs the go, java and typescript steps' plugins"
    return 0
  fi
  PATH="$bin:$ts:$PATH" buf generate --template buf.gen.local.yaml -o "$work/buf-local"
  local counts
  counts="go $(find "$work/buf-local/gen/go" -name '*.go' | wc -l), java $(find "$work/buf-local/gen/java" -name '*.java' | wc -l), ts $(find "$work/buf-local/gen/ts" -name '*.ts' | wc -l)"
  echo "buf.gen.local.yaml generated: $counts files"
  [[ -n "$(find "$work/buf-local/gen/go/reprise/v1" -name 'execution_service_grpc.pb.go')" ]]
  [[ -f "$work/buf-local/gen/java/dev/reprise/v1/ExecutionServiceGrpc.java" ]]
  [[ -f "$work/buf-local/gen/ts/reprise/v1/execution_service_pb.ts" ]]
}

if [[ " ${langs[*]} " == *" typescript "* && " ${langs[*]} " == *" go "* && " ${langs[*]} " == *" java "* ]]; then
  langs+=(buf_local)
fi
for lang in "${langs[@]}"; do
  echo "=== $lang example"
  case "$lang" in
    python | typescript | go | java | buf_local)
      set +e
      (set -e; "run_$lang")
      rc=$?
      set -e
      if [[ $rc -eq 0 ]]; then record "$lang: passed"; else fail "$lang"; fi ;;
    *) echo "unknown language $lang" >&2; exit 2 ;;
  esac
done

echo "=== examples"
sed 's/^/  /' "$work/results"
exit "$failed"
