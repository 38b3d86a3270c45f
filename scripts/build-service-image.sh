#!/usr/bin/env bash
# Build the kernel service's image for Kubernetes (docs/kubernetes.md, "The service's image").
#
#   scripts/build-service-image.sh [TAG]          default TAG: jupyter-gpu-containers-service:<version>
#
# Environment:
#   PYTHON  the Python whose installed versions the image gets (default: the repo's .venv, else
#           python3); it also builds the project's wheel, so its labextension must be built
#           (the set-up command does that).
#   BASE    the base image (default python:<that Python's X.Y>-slim-bookworm). Its python3 must
#           have the same minor version and machine type: the wheelhouse holds that Python's
#           compiled wheels.
#
# The wheelhouse is made here, with this machine's package index; the image build itself needs no
# network. Prints the tag on stdout.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[build-service-image] %s\n' "$*" >&2; }

python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
# The wheels fit one Python minor version on one machine type: the base must have both.
platform_of='import platform, sys; print("%d.%d-%s" % (*sys.version_info[:2], platform.machine()))'
py_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
py_platform=$("$python" -c "$platform_of")
project_version=$("$python" -c 'import importlib.metadata as m; print(m.version("jupyter_gpu_containers"))' 2>/dev/null || echo dev)
tag=${1:-jupyter-gpu-containers-service:$project_version}
base=${BASE:-python:$py_version-slim-bookworm}

if ! docker image inspect "$base" >/dev/null 2>&1; then
  log "pulling the base image $base"
  docker pull -q "$base" >/dev/null || {
    log "The base image $base is not here and could not be pulled; set BASE to an image this machine has or can pull."
    exit 1; }
fi
base_platform=$(docker run --rm --network=none --user 0 --entrypoint python3 "$base" \
  -c "$platform_of" 2>/dev/null) || {
  log "The base image $base has no python3 that runs; choose another BASE."; exit 1; }
if [ "$base_platform" != "$py_platform" ]; then
  log "The base image $base has Python $base_platform, but $python is $py_platform (version-machine): the wheels would not fit. Set BASE to an image with Python $py_platform, or PYTHON to an interpreter like the base's."
  exit 1
fi

context=$(mktemp -d /tmp/jgc-service-image.XXXXXX)
trap 'rm -rf "$context"' EXIT
cp "$repo/deploy/kubernetes/service.Dockerfile" "$context/Dockerfile"
# The versions this environment has (and so was tested with) pin the image's; the project itself
# is built from the checkout.
frozen=$("$python" -m pip freeze --exclude-editable 2>&1) \
  || { printf '%s\n' "$frozen" >&2; log "pip freeze failed: without it the image would get untested versions"; exit 1; }
# grep finds nothing only in an empty environment: not an error.
printf '%s\n' "$frozen" | grep -viE '^(jupyter[-_]gpu[-_]containers|pip)([ =@]|$)' \
  >"$context/constraints.txt" || true
log "making the wheelhouse with $python (Python $py_version)"
out=$("$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$context/wheels" \
  --constraint "$context/constraints.txt" pip "$repo[hub,kubernetes]" 2>&1) \
  || { printf '%s\n' "$out" >&2; log "pip wheel failed"; exit 1; }
log "building $tag on $base"
# --force-rm: a step that fails leaves no container behind (the legacy builder keeps it).
out=$(docker build --quiet --force-rm --build-arg "BASE=$base" \
  --label org.jupyter-gpu-containers.component=kernel-service -t "$tag" "$context" 2>&1) \
  || { printf '%s\n' "$out" >&2; log "docker build failed"; exit 1; }
# The build stage's image, left untagged: only the final image is worth keeping.
docker image prune --force --filter label=org.jupyter-gpu-containers.build-stage=kernel-service >/dev/null
printf '%s\n' "$tag"
