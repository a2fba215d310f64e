#!/usr/bin/env bash
# Runs tests/browser/console_scenario.py: headless Chromium, driven over
# WebDriver by chromedriver, goes through the console's resume scenario
# against `target/debug/reprise dev` (built by `cargo test`) with
# authentication on. Installs Debian's chromium and chromium-driver when
# they are missing (needs root and the Debian mirror). Screenshots of each
# page are left in target/console-screenshots/. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="${REPRISE_BIN:-target/debug/reprise}"
if [[ ! -x "$binary" ]]; then
  echo "FATAL: $binary is missing; run \`cargo test\` (or \`cargo build\`) first" >&2
  exit 1
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "browser-console: installing chromium and chromium-driver"
  if [[ "$(id -u)" -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
chromium --version 2>/dev/null | head -n 1 || true
timeout 300 python3 tests/browser/console_scenario.py --binary "$binary"
