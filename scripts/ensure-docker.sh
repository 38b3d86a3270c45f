#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine.
#
# Installs Debian's docker.io when no engine answers, and starts dockerd when it is not running,
# with a runtime named "nvidia" that is plain runc: on machines without the NVIDIA toolkit this
# lets the `--runtime=nvidia` + NVIDIA_VISIBLE_DEVICES attach path run end to end (see DESIGN.md).
# Idempotent: an engine that already answers is left exactly as it is.
set -euo pipefail

log() { printf '[ensure-docker] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# A user outside the docker group cannot reach the engine's socket (the demo's --podman mode runs
# as such a user): the engine answers when it answers root. dockerd and runc are in sbin, which a
# user's PATH often lacks.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
engine_answers() {
  docker info >/dev/null 2>&1 || { [ "$(id -u)" -ne 0 ] && as_root docker info >/dev/null 2>&1; }
}
engine_version() { as_root docker version --format '{{.Server.Version}}' 2>/dev/null || true; }

if command -v docker >/dev/null 2>&1 && engine_answers; then
  log "engine answers: $(engine_version)"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  log "installing Debian's docker.io"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io tini iptables >/dev/null
fi

runc_path=$(command -v runc || echo /usr/sbin/runc)
state_dir=${JGC_DOCKERD_STATE:-/var/run/jgc-dockerd}
as_root mkdir -p "$state_dir"

# Prefer the service manager when there is one; containers and CI sandboxes have none.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  if ! as_root test -f /etc/docker/daemon.json; then
    as_root mkdir -p /etc/docker
    printf '{"runtimes": {"nvidia": {"path": "%s"}}}\n' "$runc_path" | as_root tee /etc/docker/daemon.json >/dev/null
  fi
  as_root systemctl start docker || true
  for _ in $(seq 1 60); do
    if engine_answers; then
      log "engine answers: $(engine_version)"
      exit 0
    fi
    sleep 1
  done
  log "the docker service did not answer within 60 s"
  exit 1
fi

# After an engine that was killed (a machine's processes ended at once), the first dockerd may
# give up waiting for its containerd, which is still cleaning up: start it again, up to 3 times.
for attempt in 1 2 3; do
  log "starting dockerd (log: $state_dir/dockerd.log)"
  # setsid: dockerd must outlive this script and the shell that ran it. Started by a root shell,
  # so that its log is written as root and its process id is dockerd's own (not sudo's).
  pid=$(as_root sh -c 'setsid "$@" >"$0" 2>&1 </dev/null & echo $!' "$state_dir/dockerd.log" \
    dockerd --add-runtime "nvidia=$runc_path" --group docker)
  echo "$pid" | as_root tee "$state_dir/dockerd.pid" >/dev/null
  for _ in $(seq 1 60); do
    if engine_answers; then
      log "engine answers: $(engine_version)"
      exit 0
    fi
    # /proc, not kill -0: a user may not signal root's dockerd, but may see that it lives.
    [ -d "/proc/$pid" ] || break
    sleep 1
  done
  log "dockerd did not answer (try $attempt of 3); its log:"
  as_root tail -n 5 "$state_dir/dockerd.log" >&2 || true
  if [ -d "/proc/$pid" ]; then
    as_root kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
  fi
  sleep 2
done
exit 1
