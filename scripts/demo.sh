#!/usr/bin/env bash
# The set-up command. On a fresh Debian/Ubuntu machine: installs what is missing, starts the
# Docker engine, builds the small kernel-ready demo image if it is not there, installs the
# project, and starts JupyterLab on 127.0.0.1 with a demo workspace whose notebook runs in a
# container of the demo image.
#
#   scripts/demo.sh                 JupyterLab on http://127.0.0.1:8888
#   scripts/demo.sh --port 9999     extra arguments go to `jupyter lab`
#   scripts/demo.sh --podman        as a user outside the docker group: kernels on your own
#                                   rootless Podman (README, "Deployments"); the demo image is
#                                   built with the machine's Docker engine (as root, through
#                                   sudo), then loaded into your Podman storage
#
# Environment (README.md, "The two commands", lists them all): JGC_DEMO_PORT (8888),
# JGC_DEMO_WORKSPACE (~/gpu-containers-demo, the workspace mounted into kernels), JGC_VENV
# (.venv), JGC_DOCKERD_STATE (/var/run/jgc-dockerd). A second run on a prepared machine installs
# nothing: no apt-get update, no pip install unless the project's dependencies or its
# labextension changed (scripts/common.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
engine=docker
if [ "${1:-}" = "--podman" ]; then
  engine=podman
  shift
  if [ "$(id -u)" -eq 0 ]; then
    log "--podman runs kernels on the rootless Podman of the user who starts the demo: run it as that user (not root), with sudo for the machine's set-up"
    exit 1
  fi
  prepare_machine demo "[lab]" podman uidmap catatonit slirp4netns
else
  prepare_machine demo "[lab]"
fi

workspace=${JGC_DEMO_WORKSPACE:-$HOME/gpu-containers-demo}
mkdir -p "$workspace"

engine_args=()
run_as=()
if [ "$engine" = podman ]; then
  # Your own Podman: subordinate ids, its runtime directory and its storage on overlay; the demo
  # image in its storage (the same image as Docker's, by id). No docker group.
  ensure_rootless_podman "$(id -un)"
  export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/run/user/$(id -u)}
  wanted=$(as_root docker image inspect --format '{{.Id}}' jgc/demo:bookworm)
  have=$(podman image inspect --format '{{.Id}}' jgc/demo:bookworm 2>/dev/null || true)
  if [ "sha256:$have" != "$wanted" ] && [ "$have" != "$wanted" ]; then
    log "loading jgc/demo:bookworm into your Podman storage"
    as_root docker save jgc/demo:bookworm | podman load --quiet >/dev/null
  fi
  engine_args+=(--ContainerEngine.backend=podman)
  "$venv/bin/jupyter" gpu-containers doctor "${engine_args[@]}" || true
elif ! docker info >/dev/null 2>&1; then
  # The server's user must reach the engine's socket.
  log "adding $(id -un) to the docker group so the server can reach the engine"
  as_root usermod -aG docker "$(id -un)"
  run_as=(sg docker -c)
fi
as_server_user() {
  if [ ${#run_as[@]} -gt 0 ]; then "${run_as[@]}" "$(printf '%q ' "$@")"; else "$@"; fi
}

# As root, the demo's kernels run as root too, which the extension refuses unless allowed.
policy=()
[ "$(id -u)" -eq 0 ] && policy+=(--ContainerPolicy.allow_root=True)
# welcome.ipynb, with the kernel spec and language_info the server and its kernel will report
# (else JupyterLab marks it modified as it opens); one changed by its user is left alone.
as_server_user "$venv/bin/python" "$repo/scripts/welcome_notebook.py" "$workspace" \
  --image=jgc/demo:bookworm "${policy[@]}" "${engine_args[@]}"

args=(lab --ip=127.0.0.1 "--ServerApp.root_dir=$workspace"
      --LabApp.default_url=/lab/tree/welcome.ipynb "${policy[@]}" "${engine_args[@]}")
# A port among the extra arguments is the one: the server refuses two.
port_given=false
for arg in "$@"; do
  case $arg in --port | --port=* | --ServerApp.port | --ServerApp.port=*) port_given=true ;; esac
done
$port_given || args+=(--port="${JGC_DEMO_PORT:-8888}")
[ "$(id -u)" -eq 0 ] && args+=(--allow-root)
log "starting JupyterLab; open the URL it prints (Ctrl-C twice to stop)"
if [ ${#run_as[@]} -gt 0 ]; then
  exec "${run_as[@]}" "$(printf '%q ' "$venv/bin/jupyter" "${args[@]}" "$@")"
fi
exec "$venv/bin/jupyter" "${args[@]}" "$@"
