#!/usr/bin/env bash
# The multi-user setup of the UI tests (playwright's third webServer runs this), as root: the
# kernel service (`jupyter gpu-containers serve`, root, the only process that reaches the engine)
# and one user's JupyterLab in front of it (`--gateway-url`), running as an account outside the
# docker group. tests/service.spec.ts drives that JupyterLab.
#
# Environment (playwright.config.ts sets all of them):
#   UI_TEST_HOME       the home of both; wiped at start (only if this script made it)
#   UI_TEST_PORT       the user's JupyterLab's port on 127.0.0.1 (the service takes a free one)
#   JGC_TEST_RUN       the value of the test-run label on every container the service starts
#   JGC_TEST_OUTSIDER  the user (jgc-outsider): an account outside the docker group
#   UI_TEST_LOG_DIR    where the logs are copied at exit, after which the home is removed
#                      (unset: the home is kept)
#
# Layout of the home (the service's part is root's alone, the user's part the user's):
#   service/  config, token file (etc/), ledger and records (state/, 0700), connection files
#   ws/USER   the user's workspace (UserDirectory.workspace_template), the lab's root_dir
#   user/     the user's HOME: Jupyter's config, data, runtime, settings and temporary files
#   logs/     service.log, lab.log
#
# On SIGTERM/SIGINT/SIGHUP, or when either process exits, it stops the lab, then the service
# (which shuts its kernels down), removes every container carrying this run's label, and the home.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
venv=${JGC_VENV:-$repo/.venv}
port=${UI_TEST_PORT:-8890}
home=${UI_TEST_HOME:-/tmp/jgc-ui-tests-$port}
user=${JGC_TEST_OUTSIDER:-jgc-outsider}
export JGC_TEST_RUN=${JGC_TEST_RUN:-ui-$(date +%s)-$$}
run_label=org.jupyter.gpu-containers.test-run=$JGC_TEST_RUN
marker=.jgc-ui-test-home

say() { printf '[start-service] %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "run me as root: the kernel service runs as root"; exit 1; }
[ -x "$venv/bin/jupyter" ] || { say "no Jupyter in $venv (run scripts/test.sh once)"; exit 1; }
if ! id "$user" >/dev/null 2>&1; then
  say "there is no account $user (JGC_TEST_OUTSIDER; scripts/test.sh creates it)"
  exit 1
fi
if id -nG "$user" | tr ' ' '\n' | grep -qx docker; then
  say "$user is in the docker group: the service test needs a user outside it"
  exit 1
fi
"$venv/bin/python" -c "import jupyter_gpu_containers.service.service" || {
  say "the kernel service (jupyter_gpu_containers.service.service) does not import"
  exit 1
}

# A home we did not make could be anything: never wipe it.
if [ -e "$home" ] && [ ! -e "$home/$marker" ]; then
  say "$home exists and was not made by this script; choose another UI_TEST_HOME"
  exit 1
fi
if [ -s "$home/supervisor.pid" ] && kill -0 "$(cat "$home/supervisor.pid")" 2>/dev/null; then
  say "another service test setup runs on $home (pid $(cat "$home/supervisor.pid"))"
  exit 1
fi
rm -rf "$home"
# 0755: the user must reach their workspace and home below it; nothing here is theirs to write
# but those two.
mkdir -p -m 0755 "$home"
mkdir -p -m 0755 "$home"/{ws,logs}
touch "$home/$marker"
echo $$ >"$home/supervisor.pid"

service_home=$home/service
workspace=$home/ws/$user
user_home=$home/user
mkdir -p -m 0700 "$service_home" "$service_home/etc"
mkdir -p -m 0700 "$workspace"
mkdir -p "$user_home"/{config,data/labextensions,runtime,settings,workspaces,tmp,ipython}

# The working tree's build, not the copy `pip install -e .` put in the environment (as
# start-server.sh does: the user data directory comes first on the labextensions path).
if [ -f "$repo/jupyter_gpu_containers/labextension/package.json" ]; then
  ln -s "$repo/jupyter_gpu_containers/labextension" \
    "$user_home/data/labextensions/jupyter-gpu-containers"
else
  say "no labextension build in jupyter_gpu_containers/labextension: using the installed one"
fi

service_port=$("$venv/bin/python" -c \
  'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

UI_TESTS_DIR=$here "$venv/bin/python" - "$home" "$user" <<'PY' || exit 1
import json
import os
import sys
from pathlib import Path

from jupyter_gpu_containers.host.hoststate import provision

home, user = Path(sys.argv[1]), sys.argv[2]
service = home / "service"
sys.path.insert(0, os.environ["UI_TESTS_DIR"])
from server_config import base_config  # noqa: E402

config = {
    **base_config(service),
    "ServiceTokens": {"tokens_file": str(service / "etc" / "tokens")},
    "UserDirectory": {"workspace_template": str(home / "ws" / "{username}")},
}
(service / "service_config.json").write_text(json.dumps(config, indent=2))
# As `jupyter gpu-containers setup-host --group ''` makes it for a service that runs as root:
# root's alone (0700), so that no user reaches the ledger's lock or the records.
provision(str(service / "state"), "")

# The user's JupyterLab: galata's server settings (its helper labextension above all); the
# command line below overrides what must differ.
(home / "user" / "config" / "jupyter_lab_config.py").write_text(
    "from jupyterlab.galata import configure_jupyter_server\n\nconfigure_jupyter_server(c)\n"
)
PY

# The user's token, from the administrator's command (it prints the token once).
token=$("$venv/bin/jupyter" gpu-containers token add "$user" \
  --tokens-file "$service_home/etc/tokens" 2>>"$home/logs/service.log" \
  | grep -oE '\bjgc_[A-Za-z0-9_-]+' | tail -n 1)
if [ -z "$token" ]; then
  say "\`jupyter gpu-containers token add $user\` printed no token; the log ends with:"
  tail -n 20 "$home/logs/service.log" >&2
  exit 1
fi

# Everything under the user's part is theirs, as a home is (the labextension link points into
# the repository, which they only read).
chown -R "$user:$(id -gn "$user")" "$workspace" "$user_home"
chmod 0700 "$user_home/runtime"

service_pid=
lab_pid=

# Stop a process (SIGTERM, then SIGKILL after $2 seconds).
stop_pid() {
  local pid=$1 limit=$2 what=$3
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq $((limit * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      say "the $what (pid $pid) did not stop within $limit s: killing it"
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  wait "$pid" 2>/dev/null
}

remove_containers() {
  local ids
  ids=$(docker ps -aq --filter "label=$run_label" 2>/dev/null)
  if [ -n "$ids" ]; then
    say "removing container(s) of test run $JGC_TEST_RUN left behind: $(echo $ids)"
    # shellcheck disable=SC2086
    docker rm -f $ids >/dev/null
  fi
}

finish() {
  trap '' TERM INT HUP
  stop_pid "$lab_pid" 30 "user's JupyterLab"
  lab_pid=
  # SIGTERM: Jupyter Server shuts its kernels down (their containers go), then exits.
  stop_pid "$service_pid" 60 "kernel service"
  service_pid=
  remove_containers
  rm -f "$home/supervisor.pid"
  # The home is kept for a post-mortem unless its logs could be kept elsewhere.
  if [ -n "${UI_TEST_LOG_DIR:-}" ] && mkdir -p "$UI_TEST_LOG_DIR" \
    && cp "$home"/logs/*.log "$UI_TEST_LOG_DIR"/; then
    rm -rf "$home" 2>/dev/null
  fi
  exit "${1:-0}"
}
trap 'finish 0' TERM INT HUP

# setsid (both): process groups of their own, so that only this script signals them. Playwright
# stops its web server with a signal to our group; a second stop of the service would cut its
# shutdown of the kernels short.
setsid env HOME="$service_home" \
  JUPYTER_CONFIG_DIR="$service_home/config" \
  JUPYTER_DATA_DIR="$service_home/data" \
  JUPYTER_RUNTIME_DIR="$service_home/runtime" \
  PATH="$venv/bin:$PATH" \
  LANG=C.UTF-8 \
  "$venv/bin/jupyter" gpu-containers serve \
  --config="$service_home/service_config.json" \
  --port="$service_port" \
  --ServerApp.port_retries=0 \
  --ServerApp.root_dir="$service_home" \
  >>"$home/logs/service.log" 2>&1 &
service_pid=$!
say "kernel service pid $service_pid on http://127.0.0.1:$service_port"

# Ready once it listens and has reattached or swept the kernel containers of earlier services.
ready=
for _ in $(seq 1200); do
  kill -0 "$service_pid" 2>/dev/null || break
  if grep -qE 'Kernel containers (at start|were not checked at start)' "$home/logs/service.log" \
    && (exec 3<>"/dev/tcp/127.0.0.1/$service_port") 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  say "the kernel service did not become ready; its log ends with:"
  tail -n 40 "$home/logs/service.log" >&2
  finish 1
fi

# The user's JupyterLab, as the user (setpriv execs: the pid is the server's). The token travels
# in the environment (GatewayClient reads JUPYTER_GATEWAY_AUTH_TOKEN), not on the command line,
# where every local user could read it. Kernel starts wait for a container on a loaded machine:
# generous request timeouts. JUPYTER_PREFER_ENV_PATH=0: the user's data directory (the working
# tree's labextension build) comes before the environment's.
setsid setpriv --reuid="$user" --regid="$user" --init-groups \
  env -i HOME="$user_home" \
  USER="$user" \
  LOGNAME="$user" \
  LANG=C.UTF-8 \
  PATH="$venv/bin:/usr/bin:/bin" \
  JUPYTER_PREFER_ENV_PATH=0 \
  JUPYTER_CONFIG_DIR="$user_home/config" \
  JUPYTER_DATA_DIR="$user_home/data" \
  JUPYTER_RUNTIME_DIR="$user_home/runtime" \
  JUPYTERLAB_GALATA_ROOT_DIR="$workspace" \
  IPYTHONDIR="$user_home/ipython" \
  TMPDIR="$user_home/tmp" \
  JUPYTER_GATEWAY_AUTH_TOKEN="$token" \
  "$venv/bin/jupyter" lab \
  --no-browser \
  --ServerApp.ip=127.0.0.1 \
  --ServerApp.port="$port" \
  --ServerApp.port_retries=0 \
  --ServerApp.root_dir="$workspace" \
  --LabApp.workspaces_dir="$user_home/workspaces" \
  --LabApp.user_settings_dir="$user_home/settings" \
  --IdentityProvider.token= \
  --ServerApp.password= \
  --ServerApp.disable_check_xsrf=True \
  --LabApp.expose_app_in_browser=True \
  --gateway-url="http://127.0.0.1:$service_port" \
  --GatewayClient.request_timeout=120 \
  --GatewayClient.connect_timeout=30 \
  >>"$home/logs/lab.log" 2>&1 &
lab_pid=$!
say "$user's JupyterLab pid $lab_pid on http://127.0.0.1:$port (home $home)"

# Either one ending ends the setup: the tests cannot go on without both.
wait -n "$service_pid" "$lab_pid"
if ! kill -0 "$service_pid" 2>/dev/null; then
  say "the kernel service exited; its log ends with:"
  tail -n 40 "$home/logs/service.log" >&2
else
  say "$user's JupyterLab exited; its log ends with:"
  tail -n 40 "$home/logs/lab.log" >&2
fi
finish 1
