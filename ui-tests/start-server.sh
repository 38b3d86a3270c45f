#!/usr/bin/env bash
# The JupyterLab server of the UI tests (playwright's webServer runs this), under a small
# supervisor: a test restarts the server by killing it (tests/helpers.ts, restartServer), and the
# supervisor starts it again on the same home, config and workspace, so that state survives the
# restart as it would for a user.
#
# Environment (playwright.config.ts sets all of them):
#   UI_TEST_HOME     the server's home; wiped at start (only if this script made it). The current
#                    server's pid is in $UI_TEST_HOME/server.pid.
#   UI_TEST_PORT     the port on 127.0.0.1 (8888)
#   JGC_TEST_RUN     the value of the test-run label on every container the server starts
#   UI_TEST_NO_ENGINE  set: Binder's configuration, and an engine address where none listens
#   UI_TEST_LOG_DIR  where the server log is copied at exit, after which the home is removed
#                    (unset: the home is kept)
# The supervisor stops when it gets SIGTERM/SIGINT/SIGHUP or when the server exits while
# $UI_TEST_HOME/stop exists. Either way it stops the server and removes every container carrying
# this run's label, so that failing tests never leak one.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
venv=${JGC_VENV:-$repo/.venv}
port=${UI_TEST_PORT:-8888}
home=${UI_TEST_HOME:-/tmp/jgc-ui-tests-$port}
export JGC_TEST_RUN=${JGC_TEST_RUN:-ui-$(date +%s)-$$}
run_label=org.jupyter.gpu-containers.test-run=$JGC_TEST_RUN
marker=.jgc-ui-test-home

say() { printf '[start-server] %s\n' "$*" >&2; }

[ -x "$venv/bin/jupyter" ] || { say "no Jupyter in $venv (run scripts/test.sh once)"; exit 1; }
# A server whose extension fails to import still starts, and every test would then fail for a
# reason buried in its log.
"$venv/bin/python" -c "import jupyter_gpu_containers.server.app" || {
  say "the jupyter_gpu_containers server extension does not import"
  exit 1
}

# A home we did not make could be anything: never wipe it.
if [ -e "$home" ] && [ ! -e "$home/$marker" ]; then
  say "$home exists and was not made by this script; choose another UI_TEST_HOME"
  exit 1
fi
if [ -s "$home/supervisor.pid" ] && kill -0 "$(cat "$home/supervisor.pid")" 2>/dev/null; then
  say "another UI test server runs on $home (pid $(cat "$home/supervisor.pid"))"
  exit 1
fi
rm -rf "$home"
# Not state/ nor conn/: the server makes those itself, as only it may (root's host state
# directory, and a 0700 directory of its user's for the kernels' connection files).
mkdir -p "$home"/{config,data/labextensions,runtime,work,workspaces,tmp,logs}
touch "$home/$marker"
echo $$ >"$home/supervisor.pid"

# The working tree's build, not the copy `pip install -e .` put in the environment (a copy, made
# once): the tests must see what `npm run build` last produced. The user data directory comes
# first on the labextensions path, so this link wins over the installed copy.
if [ -f "$repo/jupyter_gpu_containers/labextension/package.json" ]; then
  ln -s "$repo/jupyter_gpu_containers/labextension" "$home/data/labextensions/jupyter-gpu-containers"
else
  say "no labextension build in jupyter_gpu_containers/labextension: using the installed one"
fi

# A private registry with one small image behind a login, for the pull test (its log in and its
# image are gone when this script ends). Not beside the Binder-like server, which has no engine.
registry_pid=
stop_registry() {
  [ -n "$registry_pid" ] || return 0
  kill -TERM "$registry_pid" 2>/dev/null
  wait "$registry_pid" 2>/dev/null
  registry_pid=
}
if [ -z "${UI_TEST_NO_ENGINE:-}" ]; then
  trap 'stop_registry; exit 1' TERM INT HUP
  # setsid, as for the server: only this script stops it, after the containers that may use the
  # pulled image are gone (a signal to our whole group would have it untag in-use images first).
  setsid "$venv/bin/python" "$here/private_registry.py" "$home" >>"$home/logs/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 1200); do
    [ -s "$home/registry.json" ] && break
    kill -0 "$registry_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ ! -s "$home/registry.json" ]; then
    say "the private registry did not start; its log ends with:"
    tail -n 30 "$home/logs/registry.log" >&2
    stop_registry
    exit 1
  fi
fi

UI_TESTS_DIR=$here UI_TEST_REPO=$repo "$venv/bin/python" - "$home" <<'PY' || exit 1
import json
import os
import sys
from pathlib import Path

home = Path(sys.argv[1])
sys.path.insert(0, os.environ["UI_TESTS_DIR"])
from server_config import base_config  # noqa: E402

config = base_config(home)
(home / "config" / "jupyter_server_config.json").write_text(json.dumps(config, indent=2))
# galata's own server settings (its helper labextension above all). The command line below
# overrides what must differ: address, directories, and no authentication.
registry = home / "registry.json"
if registry.exists():
    config["ImageCatalog"]["extra_listed_images"] = [
        {
            "image": json.loads(registry.read_text())["ref"],
            "description": "A private test image: pulling it needs a login.",
            "gpu": False,
        }
    ]
    (home / "config" / "jupyter_server_config.json").write_text(json.dumps(config, indent=2))
if os.environ.get("UI_TEST_NO_ENGINE"):
    # Binder's situation: binder/jupyter_server_config.json, and no Docker engine (a socket
    # nobody listens on).
    binder = Path(os.environ["UI_TEST_REPO"]) / "binder" / "jupyter_server_config.json"
    config = {
        **json.loads(binder.read_text()),
        "Engine": {"docker_url": f"unix://{home}/no-engine.sock"},
    }
    (home / "config" / "jupyter_server_config.json").write_text(json.dumps(config, indent=2))
(home / "config" / "jupyter_lab_config.py").write_text(
    "from jupyterlab.galata import configure_jupyter_server\n\nconfigure_jupyter_server(c)\n"
)
PY

server_pid=

stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null
    # The server shuts its kernels down (removing their containers) before it exits.
    for _ in $(seq 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server_pid" 2>/dev/null; then
      say "the server (pid $server_pid) did not stop within 30 s: killing it"
      kill -KILL "$server_pid" 2>/dev/null
    fi
  fi
  wait "$server_pid" 2>/dev/null
  server_pid=
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
  stop_server
  remove_containers
  stop_registry
  rm -f "$home/server.pid" "$home/supervisor.pid"
  # The home is kept for a post-mortem unless its logs could be kept elsewhere.
  if [ -n "${UI_TEST_LOG_DIR:-}" ] && mkdir -p "$UI_TEST_LOG_DIR" \
    && cp "$home"/logs/*.log "$UI_TEST_LOG_DIR"/; then
    rm -rf "$home" 2>/dev/null
  fi
  exit "${1:-0}"
}
trap 'finish 0' TERM INT HUP

start_server() {
  # The environment of a user's server, with everything Jupyter writes kept under the home
  # (galata's configuration makes temporary directories: TMPDIR keeps them there too).
  # setsid: a process group of its own, so that only this script signals it. A signal to our
  # group (playwright stops its web server that way) followed by ours would stop the server
  # twice, and a second stop cuts its shutdown of the kernels short.
  # JUPYTER_PREFER_ENV_PATH=0: jupyter_core otherwise puts a virtual environment's directories
  # before the user's, and the copy of the labextension that `pip install -e .` made would win
  # over the working tree's build linked above.
  setsid env HOME="$home" \
    JUPYTER_PREFER_ENV_PATH=0 \
    JUPYTER_CONFIG_DIR="$home/config" \
    JUPYTER_DATA_DIR="$home/data" \
    JUPYTER_RUNTIME_DIR="$home/runtime" \
    JUPYTERLAB_GALATA_ROOT_DIR="$home/work" \
    TMPDIR="$home/tmp" \
    PATH="$venv/bin:$PATH" \
    "$venv/bin/jupyter" lab \
    --no-browser \
    --ServerApp.ip=127.0.0.1 \
    --ServerApp.port="$port" \
    --ServerApp.port_retries=0 \
    --ServerApp.root_dir="$home/work" \
    --LabApp.workspaces_dir="$home/workspaces" \
    --IdentityProvider.token= \
    --ServerApp.password= \
    --ServerApp.disable_check_xsrf=True \
    --LabApp.expose_app_in_browser=True \
    $([ "$(id -u)" -eq 0 ] && echo --allow-root --ContainerPolicy.allow_root=True) \
    >>"$home/logs/server.log" 2>&1 &
  server_pid=$!
  echo "$server_pid" >"$home/server.pid"
  say "server pid $server_pid on http://127.0.0.1:$port (home $home)"
}

quick_failures=0
while :; do
  started=$SECONDS
  start_server
  wait "$server_pid"
  rc=$?
  server_pid=
  [ ! -e "$home/stop" ] || finish 0
  if [ "$rc" -ne 0 ] && [ $((SECONDS - started)) -lt 10 ]; then
    quick_failures=$((quick_failures + 1))
    say "the server exited with $rc within 10 s of its start; its log ends with:"
    tail -n 30 "$home/logs/server.log" >&2
    if [ "$quick_failures" -ge 3 ]; then
      say "giving up after 3 quick failures in a row"
      finish 1
    fi
  else
    quick_failures=0
  fi
  say "the server exited ($rc): starting it again"
done
