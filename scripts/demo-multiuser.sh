#!/usr/bin/env bash
# The multi-user demo: on one machine, what docs/admin-guide.md sets up on a shared GPU host.
# JupyterHub (PyPI) with its proxy (npm's configurable-http-proxy), three real accounts that are
# NOT in the docker group (jgc-demo-alice, -bob and -carol, created when missing), and the kernel
# service (`jupyter gpu-containers serve`, as root) that alone reaches the Docker engine. Each
# user's JupyterLab gets its container kernels through the service, with its own Hub token.
# Everything listens on 127.0.0.1 only. Ctrl-C stops what it started.
#
#   scripts/demo-multiuser.sh       JupyterHub on http://127.0.0.1:8000
#
# Environment: JGC_MULTIUSER_PORT (8000, the Hub's public port), JGC_SERVICE_PORT (8890, the
# kernel service), JGC_DEMO_PASSWORD (random: the shared password of the demo's
# DummyAuthenticator), JGC_DEMO_USERS (the demo's accounts, separated by spaces: the three above;
# the tests' smoke run has accounts of its own, so that the UI tests' demo may run beside it), and
# scripts/demo.sh's JGC_VENV, JGC_DOCKERD_STATE.
# DEMO_SMOKE=1: start everything, check that the Hub answers, that a user's server lists the
# service's container kernels with its own token, then stop (tests/test_demo_multiuser.py).
# For the UI tests (ui-tests/start-hub.sh): JGC_TEST_RUN also labels the kernels with the test
# run, JGC_DEMO_LOG_DIR receives the Hub's and the service's logs as the demo stops, and
# JGC_DEMO_STATE_DIR is the service's host state directory instead of the host's (made as
# `setup-host --state-dir` makes it): the demo's GPU queue and liveness files then stay apart from
# those of the other tests' servers on the machine.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  # The Hub starts each user's server as that user, and the service reaches the engine: root.
  exec sudo --preserve-env=JGC_MULTIUSER_PORT,JGC_DEMO_USERS,JGC_SERVICE_PORT,JGC_DEMO_PASSWORD,JGC_VENV,JGC_DOCKERD_STATE,DEMO_SMOKE,JGC_TEST_RUN,JGC_DEMO_LOG_DIR,JGC_DEMO_STATE_DIR "$0" "$@"
fi
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
prepare_machine demo-multiuser "[lab,hub]"

# Three students for two GPUs: the third to ask waits.
read -r -a users <<<"${JGC_DEMO_USERS:-jgc-demo-alice jgc-demo-bob jgc-demo-carol}"
user_list=$(printf '"%s", ' "${users[@]}")
hub_port=${JGC_MULTIUSER_PORT:-8000}
service_port=${JGC_SERVICE_PORT:-8890}
password=${JGC_DEMO_PASSWORD:-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')}
proxy=$repo/node_modules/.bin/configurable-http-proxy

# What the demo adds to the single-user set-up: JupyterHub and JupyterLab in the venv (the
# project's [lab,hub] extras, installed above), the proxy from npm.
if [ ! -x "$proxy" ]; then
  log "npm install (configurable-http-proxy)"
  (cd "$repo" && npm install --no-audit --no-fund >/dev/null)
fi

# The demo users: real accounts with a home (their workspace), outside the docker group.
for user in "${users[@]}"; do
  if ! id "$user" >/dev/null 2>&1; then
    log "creating the demo account $user (not in the docker group)"
    useradd --create-home --shell /bin/bash "$user"
  fi
  if id -nG "$user" | tr ' ' '\n' | grep -qx docker; then
    log "taking $user out of the docker group: the demo's users reach Docker only through the service"
    gpasswd -d "$user" docker >/dev/null
  fi
  if ! runuser -u "$user" -- test -x "$venv/bin/jupyterhub-singleuser"; then
    log "$user cannot run $venv/bin/jupyterhub-singleuser: every directory above the venv must be"
    log "readable and searchable by other users (chmod o+rx), or set JGC_VENV to a venv elsewhere."
    exit 1
  fi
done

# Secrets and state of this run, root's alone; removed at the end.
run_dir=$(mktemp -d /tmp/jgc-demo-multiuser.XXXXXX)
chmod 700 "$run_dir"
service_token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
admin_token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
hub_api_port=$(free_port)
proxy_api_port=$(free_port)
# A start that waits for a GPU keeps the user's server's request to the service open for the
# whole wait: the server must wait longer than the queue lets a start wait, plus its launch
# (ContainerProvisioner.launch_timeout, 60 s), or a long wait ends in a timeout.
max_wait=1800
gateway_timeout=$((max_wait + 120))

cat >"$run_dir/jupyterhub_config.py" <<EOF
# The multi-user demo's Hub: the admin guide's configuration (section 6), on loopback.
c = get_config()  # noqa: F821
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = $hub_port
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = $hub_api_port
c.JupyterHub.db_url = "sqlite:///$run_dir/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "$run_dir/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "$run_dir/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True
c.ConfigurableHTTPProxy.command = ["$proxy"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:$proxy_api_port"
c.ConfigurableHTTPProxy.pid_file = "$run_dir/proxy.pid"

# Demo logins: any of the demo users, one shared password. Never on a real host.
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "$password"
c.Authenticator.allowed_users = {${user_list%, }}

c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = ["$venv/bin/jupyterhub-singleuser"]
c.Spawner.default_url = "/lab"
c.JupyterHub.services = [
    {"name": "gpu-containers", "api_token": "$service_token", "display": False},
    # The smoke test's admin (DEMO_SMOKE=1): starts a server, makes a token.
    {"name": "jgc-demo-admin", "api_token": "$admin_token"},
]
c.JupyterHub.load_roles = [
    {
        "name": "gpu-containers-users",
        "scopes": ["access:services!service=gpu-containers"],
        "users": [${user_list%, }],
    },
    {
        "name": "jgc-demo-admin",
        "scopes": ["admin:users", "admin:servers", "tokens", "read:hub"],
        "services": ["jgc-demo-admin"],
    },
]
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    "access:services!service=gpu-containers",
]
c.Spawner.environment = {
    "JUPYTER_GATEWAY_URL": "http://127.0.0.1:$service_port",
    "JUPYTER_GATEWAY_AUTH_TOKEN": lambda spawner: spawner.api_token,
    "JUPYTER_GATEWAY_REQUEST_TIMEOUT": "$gateway_timeout",
}
EOF

pids=()
stop_all() {
  trap - INT TERM EXIT
  log "stopping the demo"
  # The Hub first: it stops the users' servers and its proxy (cleanup_servers, cleanup_proxy).
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -f "$run_dir/proxy.pid" ]; then
    pid=$(cat "$run_dir/proxy.pid")
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "node" ] && kill -TERM "$pid" 2>/dev/null || true
  fi
  # The service shut its kernels down as it stopped (keep_kernels_on_stop false); a container
  # of this run that outlived a service killed before it could is removed here.
  local left
  left=$(docker ps -aq --filter "label=org.jupyter.gpu-containers.demo-run=$(basename "$run_dir")" 2>/dev/null || true)
  if [ -n "$left" ]; then
    log "removing $(echo "$left" | wc -w) kernel container(s) of the demo"
    # shellcheck disable=SC2086  # one id a word
    docker rm -f $left >/dev/null 2>&1 || true
  fi
  if [ -n "${JGC_DEMO_LOG_DIR:-}" ]; then
    mkdir -p "$JGC_DEMO_LOG_DIR" && cp "$run_dir"/*.log "$JGC_DEMO_LOG_DIR"/ 2>/dev/null || true
  fi
  rm -rf "$run_dir"
}
trap stop_all INT TERM EXIT

answers() { "$venv/bin/python" - "$@" <<'PY'
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Authorization": f"token {sys.argv[2]}"} if len(sys.argv) > 2 else {})
try:
    with urllib.request.urlopen(request, timeout=5) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}
wait_for() { # what, url, [token]
  local what=$1; shift
  for _ in $(seq 1 600); do
    answers "$@" && return 0
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || { log "$what: a process of the demo exited; see $run_dir/*.log"; tail -n 30 "$run_dir"/*.log >&2; return 1; }
    done
    sleep 0.5
  done
  log "$what did not answer in 5 minutes"; tail -n 30 "$run_dir"/*.log >&2; return 1
}

# What a class shares: GPUs, one at a time per student (GPUAllocator.max_gpus_per_user), a queue
# to wait in, and kernels that go when the demo stops. A host without an NVIDIA GPU gets two
# declared ones (GPUInventory.static_gpus), so that sharing, waiting and "another user" show.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  gpus_note="this host's NVIDIA GPUs"
  inventory='{}'
else
  gpus_note="two declared demo GPUs (this host has no NVIDIA GPU: kernels get none for real)"
  inventory='{
    "static_gpus": [
      {"index": 0, "uuid": "GPU-demo-0", "name": "Demo GPU 0 (declared)", "brand": "tesla",
       "compute_capability": "8.0", "memory_total": 42949672960},
      {"index": 1, "uuid": "GPU-demo-1", "name": "Demo GPU 1 (declared)", "brand": "tesla",
       "compute_capability": "8.0", "memory_total": 42949672960}
    ],
    "static_driver_version": "535.104.05",
    "static_cuda_version": "12.2"
  }'
fi
test_label=""
if [ -n "${JGC_TEST_RUN:-}" ]; then
  [[ $JGC_TEST_RUN =~ ^[A-Za-z0-9._-]+$ ]] || { log "JGC_TEST_RUN must be letters, digits, . _ -"; exit 1; }
  test_label="\"org.jupyter.gpu-containers.test-run\": \"$JGC_TEST_RUN\", "
fi
state_policy=""
if [ -n "${JGC_DEMO_STATE_DIR:-}" ]; then
  [[ $JGC_DEMO_STATE_DIR =~ ^/[A-Za-z0-9._/-]+$ ]] || { log "JGC_DEMO_STATE_DIR must be an absolute path of letters, digits, . _ - /"; exit 1; }
  log "the service's host state directory: $JGC_DEMO_STATE_DIR (JGC_DEMO_STATE_DIR)"
  "$venv/bin/jupyter" gpu-containers setup-host --state-dir="$JGC_DEMO_STATE_DIR" >/dev/null
  state_policy="\"ContainerPolicy\": {\"state_dir\": \"$JGC_DEMO_STATE_DIR\"},"
fi
cat >"$run_dir/service_config.json" <<JSON
{
  $state_policy
  "ContainerKernelSpecManager": {"image_include": ["jgc/demo:*", "jgc/demo-cuda:*"]},
  "GPUInventory": $inventory,
  "GPUAllocator": {"max_gpus_per_user": 1},
  "GPUQueue": {"max_wait": $max_wait},
  "ContainerProvisioner": {"extra_labels": {$test_label"org.jupyter.gpu-containers.demo-run": "$(basename "$run_dir")"}},
  "ServiceApp": {"keep_kernels_on_stop": false}
}
JSON

log "starting the kernel service on 127.0.0.1:$service_port (log: $run_dir/service.log)"
# The service as the Hub's externally managed service: its token and the Hub's API from the
# environment (under systemd: /etc/jupyter-gpu-containers/hub.env). The host state directory
# is the one prepare_machine made; the demo's users are outside its group.
JUPYTERHUB_API_TOKEN=$service_token JUPYTERHUB_API_URL=http://127.0.0.1:$hub_api_port/hub/api \
  JUPYTERHUB_SERVICE_NAME=gpu-containers \
  "$venv/bin/jupyter" gpu-containers serve --ip=127.0.0.1 --port="$service_port" \
  --config="$run_dir/service_config.json" \
  >"$run_dir/service.log" 2>&1 </dev/null &
pids+=($!)

log "starting JupyterHub on http://127.0.0.1:$hub_port (log: $run_dir/hub.log)"
(cd "$run_dir" && exec "$venv/bin/jupyterhub" -f "$run_dir/jupyterhub_config.py") \
  >"$run_dir/hub.log" 2>&1 </dev/null &
# The Hub stops first: it is the first to signal, since it must stop users' servers while the
# service still answers.
pids=("$!" "${pids[@]}")

wait_for "JupyterHub" "http://127.0.0.1:$hub_port/hub/api/"
# The service answers only authenticated requests: a 403 without a token proves it is up.
code=""
for _ in $(seq 1 600); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$service_port/api/kernelspecs" || true)
  [ "$code" = 403 ] && break
  kill -0 "${pids[1]}" 2>/dev/null || break
  sleep 0.5
done
[ "$code" = 403 ] || { log "the kernel service did not start"; tail -n 30 "$run_dir/service.log" >&2; exit 1; }

if [ "${DEMO_SMOKE:-}" = 1 ]; then
  # One user's server through the whole chain: the Hub spawns it as the user, it asks the
  # service for kernel specs with its own Hub token, the service checks that token with the Hub.
  user=${users[0]}
  api=http://127.0.0.1:$hub_api_port/hub/api
  curl -fsS -X POST -H "Authorization: token $admin_token" "$api/users/$user/server" >/dev/null
  ready=""
  for _ in $(seq 1 600); do
    ready=$(curl -fsS -H "Authorization: token $admin_token" "$api/users/$user" \
      | "$venv/bin/python" -c 'import json,sys; s=json.load(sys.stdin)["servers"].get(""); print(1 if s and s["ready"] else "")')
    [ -n "$ready" ] && break
    sleep 0.5
  done
  [ -n "$ready" ] || { log "$user's server did not start"; tail -n 40 "$run_dir/hub.log" >&2; exit 1; }
  token=$(curl -fsS -X POST -H "Authorization: token $admin_token" -d '{"expires_in": 600}' \
    "$api/users/$user/tokens" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  # The service lists an image once its readiness probe answered (cached after the first run).
  for _ in $(seq 1 120); do
    specs=$(curl -fsS -H "Authorization: token $token" "http://127.0.0.1:$hub_port/user/$user/api/kernelspecs")
    [[ $specs == *jgc/demo* ]] && break
    sleep 1
  done
  echo "$specs" | "$venv/bin/python" -c '
import json, sys
specs = json.load(sys.stdin)["kernelspecs"]
names = [n for n, s in specs.items() if "jgc/demo" in s["spec"]["display_name"]]
print("DEMO_SMOKE: kernel specs through the service:", ", ".join(sorted(names)) or "none")
if not names:
    print("DEMO_SMOKE: the server lists:", json.dumps(specs)[:2000])
sys.exit(0 if names else 1)' || { tail -n 40 "$run_dir/service.log" "$run_dir/hub.log" >&2; exit 1; }
  # What a class shares: the GPUs the user's panel reads, a GPU kernel on one of them, and the
  # per-user cap refusing a second (its container is removed as the demo stops, below).
  user_api=http://127.0.0.1:$hub_port/user/$user
  curl -fsS -H "Authorization: token $token" "$user_api/gpu-containers/gpus" | "$venv/bin/python" -c '
import json, sys
gpus = json.load(sys.stdin)["gpus"]
print("DEMO_SMOKE: GPUs:", ", ".join(g["name"] for g in gpus))' \
    || { tail -n 40 "$run_dir/service.log" >&2; exit 1; }
  # A start that waits for a GPU must not outlast the user's server's wait for the service.
  server_pid=$(pgrep -u "$user" -f jupyterhub-singleuser | head -n 1) || true
  [ -n "$server_pid" ] || { log "$user's server process was not found"; exit 1; }
  server_timeout=$(tr '\0' '\n' <"/proc/$server_pid/environ" | sed -n 's/^JUPYTER_GATEWAY_REQUEST_TIMEOUT=//p')
  curl -fsS -H "Authorization: token $token" "$user_api/gpu-containers/queue" | "$venv/bin/python" -c '
import json, sys
print("DEMO_SMOKE: a start waits at most", json.load(sys.stdin)["max_wait"], "s; the server waits", sys.argv[1], "s")' \
    "$server_timeout" || { tail -n 40 "$run_dir/service.log" >&2; exit 1; }
  gpu_spec=$(echo "$specs" | "$venv/bin/python" -c '
import json, sys
specs = json.load(sys.stdin)["kernelspecs"]
print(next(n for n, s in specs.items() if "jgc/demo-cuda" in s["spec"]["display_name"]))') \
    || { log "no kernel spec of jgc/demo-cuda"; exit 1; }
  start_gpu_kernel() {
    curl -sS -o "$run_dir/start.json" -w '%{http_code}' -X POST \
      -H "Authorization: token $token" -H 'Content-Type: application/json' \
      -d "{\"name\": \"$gpu_spec\"}" "$user_api/api/kernels"
  }
  code=$(start_gpu_kernel)
  [ "$code" = 201 ] || { log "a GPU kernel did not start ($code): $(cat "$run_dir/start.json")"; tail -n 40 "$run_dir/service.log" >&2; exit 1; }
  echo "DEMO_SMOKE: a GPU kernel started: $("$venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$run_dir/start.json")"
  code=$(start_gpu_kernel)
  echo "DEMO_SMOKE: a second GPU kernel: $code $(cat "$run_dir/start.json")"
  echo "DEMO_SMOKE: kernels carry org.jupyter.gpu-containers.demo-run=$(basename "$run_dir")"
  log "DEMO_SMOKE: the Hub, $user's server and the kernel service answer"
  exit 0
fi

cat >&2 <<EOF

  The multi-user demo is up (loopback only):

    JupyterHub:      http://127.0.0.1:$hub_port
    log in as:       ${users[0]}, ${users[1]} or ${users[2]}
    password:        $password
    kernel service:  http://127.0.0.1:$service_port (root; the users are not in the docker group)

  GPUs:            $gpus_note; at most one per user at a time
  images:          jgc/demo:bookworm (CPU) and jgc/demo-cuda:12.2 (a GPU build)

  In JupyterLab, start a "jgc/demo:bookworm" kernel from the Launcher: it runs in a container as
  the user who logged in, with their home mounted. To see sharing, log in as each user (in
  private windows) and open GPU notebooks on jgc/demo-cuda:12.2 from the GPU Containers panel:
  two users hold one GPU each, a second GPU notebook of the same user is refused (the cap), and
  the third user's "Wait for a free GPU" queues a start that gets a GPU by itself once one
  frees (behind the service its notebook opens then; a start waits at most $((max_wait / 60)) minutes).
  Logs: $run_dir/{hub,service}.log

  Ctrl-C stops everything this script started.

EOF
wait "${pids[0]}"
