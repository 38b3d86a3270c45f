#!/usr/bin/env bash
# Build the Kubernetes binaries the tests run (kube-apiserver, kube-scheduler,
# kube-controller-manager, kubelet) from the Kubernetes sources, as Go modules, and the pause image
# the kubelet's sandboxes run; and KWOK's controller (kwok), which simulates the pods of nodes that
# have no kubelet, for the benchmark's cluster at scale. No registry these machines reach ships
# the binaries; the Go module proxy ships the sources.
#
#   scripts/build-kubernetes.sh          build once per machine and print the bin directory
#   scripts/build-kubernetes.sh --kubernetes
#                                        the same, for the Kubernetes binaries alone (KWOK may
#                                        still be building: the tests of the cluster need it not)
#   scripts/build-kubernetes.sh --if-built
#                                        print it if this machine has built both; else exit 3
#
# A small wrapper module requires k8s.io/kubernetes at a fixed release with `replace` lines for its
# staging modules (k8s.io/api, k8s.io/client-go, ...: k8s.io/kubernetes's own go.mod points them at
# ./staging, and a dependency's replace lines do not apply to the module that requires it).
#
# The release: 1.33, whose kubelet still runs on cgroup v1 (1.35 refuses it by default) and speaks
# CRI v1 to Debian 12's containerd 1.6. (Of the releases before 1.35, it is the newest whose
# staging modules the module proxy serves at the same version.)
#
# KWOK is built in a wrapper module of its own with the same replace lines: KWOK's release of the
# same minor asks for the staging modules' .0, and gets the release's own version, so Go's build
# cache serves every package the two builds have in common, while the control plane's binaries
# keep their own module graph.
#
# The result is cached by version outside the clone (JGC_K8S_CACHE, by default
# /var/cache/jupyter-gpu-containers/kubernetes/<version>), so a machine builds it once. A stamp
# written last marks each complete part (the release's binaries; KWOK at its version): an
# interrupted part is built again, and a machine that has the first builds only the second.
set -euo pipefail

K8S_VERSION=${JGC_K8S_VERSION:-v1.33.13}
KWOK_VERSION=${JGC_KWOK_VERSION:-v0.7.0}
cache=${JGC_K8S_CACHE:-/var/cache/jupyter-gpu-containers/kubernetes}/$K8S_VERSION
bin=$cache/bin
stamp=$cache/.complete
kwok_stamp=$cache/.kwok-$KWOK_VERSION
binaries=(kube-apiserver kube-scheduler kube-controller-manager kubelet)
part=all
[ "${1:-}" = --kubernetes ] && part=kubernetes

log() { printf '[build-kubernetes] %s\n' "$*" >&2; }
built() { [ -f "$stamp" ] && { [ "$part" = kubernetes ] || [ -f "$kwok_stamp" ]; }; }

if built; then
  printf '%s\n' "$bin"
  exit 0
fi
[ "${1:-}" = --if-built ] && exit 3

command -v go >/dev/null || { log "Go is needed to build Kubernetes from its sources; install it first"; exit 1; }
command -v gcc >/dev/null || { log "gcc is needed to build the pause image's program; install it first"; exit 1; }
# Go 1.21 and later fetch the toolchain the sources ask for through the module proxy when they
# are older (GOTOOLCHAIN=auto; some distributions set "local" in go.env); earlier ones cannot.
go_minor=$(go env GOVERSION | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ -z "$go_minor" ] || [ "$go_minor" -lt 21 ]; then
  log "Go $(go env GOVERSION) cannot build Kubernetes $K8S_VERSION (it needs Go 1.24, which Go 1.21 and later fetch by themselves): install a newer Go"
  exit 1
fi
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
export GOFLAGS=-mod=mod CGO_ENABLED=0

if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
  log "cannot write $cache: run as root, or set JGC_K8S_CACHE to a directory of yours"
  exit 1
fi
works=()
trap 'rm -rf "${works[@]}"' EXIT

# new_work KIND: a work directory for one part, in the cache (its leftovers from a killed build
# removed first: called under that part's lock), holding the replace lines of its wrapper module.
new_work() {
  rm -rf "$cache/.build-$1".*
  work=$(mktemp -d "$cache/.build-$1.XXXXXX")
  works+=("$work")
  local staging_version=v0.${K8S_VERSION#v1.} modfile m
  # Which staging modules this release has: its go.mod's replace block names them.
  modfile=$(mktemp "$work/k8s-go.mod.XXXXXX")
  go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' | xargs cat >"$modfile"
  for m in $(sed -n 's|^[[:space:]]*k8s.io/\([a-z-]*\) => ./staging/.*|\1|p' "$modfile"); do
    if go mod download "k8s.io/$m@$staging_version" >/dev/null 2>&1; then
      printf 'replace k8s.io/%s => k8s.io/%s %s\n' "$m" "$m" "$staging_version"
    else
      # A staging module the proxy does not serve at this version (code generators, samples) is
      # in k8s.io/kubernetes's requirements but in none of the binaries: an empty module of
      # that path completes the module graph.
      mkdir -p "$work/absent/$m"
      printf 'module k8s.io/%s\n' "$m" >"$work/absent/$m/go.mod"
      printf 'replace k8s.io/%s => ./absent/%s\n' "$m" "$m"
    fi
  done >"$work/replace"
}

# wrapper MODULE REQUIREMENT VERSION GO: the wrapper module, in $work.
wrapper() {
  {
    printf 'module jupyter-gpu-containers/%s\n\ngo %s\n\nrequire %s %s\n\n' "$1" "$4" "$2" "$3"
    cat "$work/replace"
  } >"$work/go.mod"
  printf 'package main\n\nfunc main() {}\n' >"$work/main.go"
}

# One build of each part at a time per version (two test runs starting together on a fresh
# machine): the second waits under the part's lock, then finds its stamp. The Kubernetes
# binaries' lock is let go before KWOK's build, which those waiting for them need not wait for.
# locked LOCK STAMP: hold the part's lock; false (and let go) when its stamp is there by then.
locked() {
  exec {lock_fd}>"$cache/$1"
  flock "$lock_fd"
  if [ -f "$2" ]; then
    exec {lock_fd}>&-
    return 1
  fi
}

build_kubernetes() {
  locked .lock "$stamp" || return 0
  rm -rf "$cache"/.build.*  # an older script's, killed
  new_work kubernetes
  wrapper kubernetes-build k8s.io/kubernetes "$K8S_VERSION" 1.23
  cd "$work"
  local start b minor ldflags pkg src
  start=$(date +%s)
  log "resolving k8s.io/kubernetes $K8S_VERSION and its modules"
  for b in "${binaries[@]}"; do go get "k8s.io/kubernetes/cmd/$b@$K8S_VERSION" >/dev/null 2>&1 || go get "k8s.io/kubernetes/cmd/$b@$K8S_VERSION"; done

  # The version the binaries report, as Kubernetes's own build stamps it (hack/lib/version.sh):
  # nodes, the API's /version and the apiserver's compatibility checks read it.
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$work/bin"
  for b in "${binaries[@]}"; do
    log "building $b (the first build on a machine takes many minutes)"
    go build -trimpath -ldflags "$ldflags" -o "$work/bin/$b" "k8s.io/kubernetes/cmd/$b"
  done

  # The pause program, from the same release's sources, as a static binary in a one-file image
  # (an OCI archive containerd imports: no registry, no Docker).
  log "building the pause image"
  src=$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  gcc -Os -static -Wall -Werror -DVERSION="$K8S_VERSION" -o "$work/bin/pause" "$src/build/pause/linux/pause.c"
  strip "$work/bin/pause" 2>/dev/null || true

  rm -f "$kwok_stamp"  # its binary goes with the directory
  rm -rf "$bin"
  mv "$work/bin" "$bin"
  printf '%s seconds on %s cores, %s\n' "$(( $(date +%s) - start ))" "$(nproc)" "$(date -u +%FT%TZ)" >"$cache/build-time"
  touch "$stamp"
  log "Kubernetes built in $(( $(date +%s) - start )) s: $bin"
  exec {lock_fd}>&-
}

# KWOK's controller, from its release's module, on the release's staging modules.
build_kwok() {
  locked .kwok-lock "$kwok_stamp" || return 0
  new_work kwok
  wrapper kwok-build sigs.k8s.io/kwok "$KWOK_VERSION" 1.24
  cd "$work"
  local start
  start=$(date +%s)
  log "resolving sigs.k8s.io/kwok $KWOK_VERSION and its modules"
  go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >/dev/null 2>&1 || go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  log "building kwok"
  # At the lowest priority: one test near the end of the test command wants it, so its build
  # takes only what CPU the tests leave idle (nice adds to the caller's niceness, up to 19).
  nice -n 19 go build -trimpath -ldflags "-s -w" -o "$work/kwok" sigs.k8s.io/kwok/cmd/kwok
  mv "$work/kwok" "$bin/kwok"
  printf '%s seconds on %s cores, %s\n' "$(( $(date +%s) - start ))" "$(nproc)" "$(date -u +%FT%TZ)" >"$cache/kwok-build-time"
  touch "$kwok_stamp"
  log "KWOK built in $(( $(date +%s) - start )) s: $bin/kwok"
  exec {lock_fd}>&-
}

build_kubernetes
[ "$part" = kubernetes ] || build_kwok
printf '%s\n' "$bin"
