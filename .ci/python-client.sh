#!/usr/bin/env bash
# Runs tests/python/resume_scenario.py: a Python client generated from
# proto/ with grpcio-tools drives the resume scenario against the real
# `target/debug/reprise dev` (built by `cargo test`). grpcio and grpcio-tools
# go into a throw-away venv. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${REPRISE_BIN:-target/debug/reprise}"
if [[ ! -x "$binary" ]]; then
  echo "FATAL: $binary is missing; run \`cargo test\` (or \`cargo build\`) first" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "python-client: installing grpcio and grpcio-tools into $work/venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check grpcio==1.85.3 grpcio-tools==1.85.1

"$work/venv/bin/python" tests/python/resume_scenario.py --binary "$binary"
