#!/usr/bin/env bash
# The UI tests' own Docker engine: a second dockerd beside the machine's, so that the test command
# can run the UI tests beside the rest's pytest session (scripts/test.sh) without either seeing
# the other's kernels, images or GPU holders (the GPU ledger is read from the engine's containers'
# labels, and the panels probe every local image). Prints the DOCKER_HOST that reaches it.
#
# Idempotent: an engine that answers is kept as it is. The test images are copied from the
# machine's engine where they differ (docker save | docker load: their recipe labels travel with
# them), then scripts/build-images.sh builds on it whatever is still missing (the demo's images).
#
# Environment: JGC_UI_ENGINE_STATE (/run/jgc-ui-docker: its socket, pid file and log) and
# JGC_UI_ENGINE_ROOT (/var/lib/jgc-ui-docker: its images and containers). Root, or sudo.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[start-engine] %s\n' "$*" >&2; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

state=${JGC_UI_ENGINE_STATE:-/run/jgc-ui-docker}
root=${JGC_UI_ENGINE_ROOT:-/var/lib/jgc-ui-docker}
socket=unix://$state/docker.sock
# The bridge its containers sit on: a name of its own (the machine's engine has docker0).
bridge=jgc-ui0
ui() { as_root env DOCKER_HOST="$socket" "$@"; }
answers() { ui docker info >/dev/null 2>&1; }

if ! answers; then
  as_root mkdir -p "$state"
  # Searchable by all: the docker group's users (the tests' second student) reach the socket,
  # which is root's and the docker group's only.
  as_root chmod 0755 "$state"
  if ! ip link show "$bridge" >/dev/null 2>&1; then
    # A /24 that no route of the host covers yet (a VPN, the Kubernetes tests' node bridges).
    subnet=$(python3 - <<'EOF'
import ipaddress, subprocess
taken = []
for line in subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout.splitlines():
    first = line.split()[0]
    if first != "default":
        taken.append(ipaddress.ip_network(first if "/" in first else first + "/32", strict=False))
for third in range(200, 256):
    candidate = ipaddress.ip_network(f"10.213.{third}.0/24")
    if not any(candidate.overlaps(t) for t in taken):
        print(f"{candidate.network_address + 1}/24")
        break
EOF
    )
    [ -n "$subnet" ] || { log "no free /24 in 10.213.200.0-10.213.255.0 for $bridge"; exit 1; }
    log "bridge $bridge on $subnet"
    as_root ip link add "$bridge" type bridge
    as_root ip addr add "$subnet" dev "$bridge"
    as_root ip link set "$bridge" up
  fi
  runc_path=$(command -v runc || echo /usr/sbin/runc)
  log "starting the UI tests' dockerd (log: $state/dockerd.log)"
  # No iptables rules of its own (the machine's engine owns them): published ports go through
  # docker-proxy, which is all a kernel on loopback needs, and containers reach nothing outside.
  # A containerd of its own (under its exec root), never the machine's.
  pid=$(as_root sh -c 'setsid "$@" >"$0" 2>&1 </dev/null & echo $!' "$state/dockerd.log" \
    dockerd --host "$socket" --data-root "$root" --exec-root "$state/exec" \
    --pidfile "$state/dockerd.pid" --bridge "$bridge" --iptables=false --ip6tables=false \
    --ip-masq=false --add-runtime "nvidia=$runc_path" --group docker)
  for _ in $(seq 1 60); do
    answers && break
    [ -d "/proc/$pid" ] || { log "dockerd exited; its log:"; as_root tail -n 20 "$state/dockerd.log" >&2; exit 1; }
    sleep 1
  done
  answers || { log "the UI tests' dockerd did not answer within 60 s"; exit 1; }
fi

# The machine's test images, where the UI engine has none or another build of them: those the
# build script names only, not every image that carries their labels (tests tag and remove copies
# of them meanwhile, and one removed between this list and the save failed the save).
copy=()
for tag in $(bash "$repo/scripts/build-images.sh" tags all); do
  mine=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null) || continue
  theirs=$(ui docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
  [ "$mine" = "$theirs" ] || copy+=("$tag")
done
if [ "${#copy[@]}" -gt 0 ]; then
  log "copying ${copy[*]} to it"
  docker save "${copy[@]}" | ui docker load -q >/dev/null
fi
ui bash "$repo/scripts/build-images.sh" all
echo "$socket"
