#!/usr/bin/env bash
# The Python example client (examples/python/resume_scenario.py), generated
# from proto/ with grpcio-tools, runs the resume scenario against the real
# `target/debug/reprise dev` (built by `cargo test`). .ci/clients.sh does the
# work (a throw-away venv, one server); this keeps the CI step's name.
set -euo pipefail
exec bash "$(dirname "$0")/clients.sh" python
