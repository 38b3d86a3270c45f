#!/usr/bin/env bash
# The multi-user demo as the UI tests' fourth webServer (tests/hub.spec.ts): scripts/demo-multiuser.sh
# itself, as a person runs it (JupyterHub, the two demo students outside the docker group, the
# kernel service with two declared GPUs, one per student), on the ports and with the password
# playwright.config.ts chose. Its kernels also carry this run's test label; its logs go to
# UI_TEST_LOG_DIR as it stops. On SIGTERM the demo stops what it started (its own trap).
#
# Environment (playwright.config.ts sets all of them):
#   UI_TEST_PORT               the Hub's public port on 127.0.0.1
#   UI_TEST_HUB_SERVICE_PORT   the kernel service's port
#   UI_TEST_HUB_PASSWORD       the demo's shared password
#   JGC_TEST_RUN               the value of the test-run label on every kernel container
#   UI_TEST_LOG_DIR            where the Hub's and the service's logs are copied at the end
#   JGC_DEMO_STATE_DIR         the demo's host state directory (/run/jgc-ui-tests-demo-state)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

[ "$(id -u)" -eq 0 ] || { echo "[start-hub] run me as root: the demo runs the Hub and the service" >&2; exit 1; }
export JGC_MULTIUSER_PORT=${UI_TEST_PORT:?} JGC_SERVICE_PORT=${UI_TEST_HUB_SERVICE_PORT:?}
export JGC_DEMO_PASSWORD=${UI_TEST_HUB_PASSWORD:?} JGC_VENV=${JGC_VENV:-$repo/.venv}
export JGC_DEMO_LOG_DIR=${UI_TEST_LOG_DIR:-}
# A host state directory of the UI tests' demo: its GPU queue (the third student waits in it) is
# then not the one of other servers on the machine (another test session's), whose starts a
# waiting ticket would hold up.
export JGC_DEMO_STATE_DIR=${JGC_DEMO_STATE_DIR:-/run/jgc-ui-tests-demo-state}
exec bash "$repo/scripts/demo-multiuser.sh"
