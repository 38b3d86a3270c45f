# Shared set-up steps for scripts/demo.sh and scripts/test.sh (sourced, not run).
# Each step is idempotent: a second run on a prepared machine costs seconds.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${JGC_VENV:-$repo/.venv}

# Playwright (a dev dependency, for the UI tests) must never fetch browsers of its own: the UI
# tests use the distribution's Chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

log() { printf '\033[1m[%s]\033[0m %s\n' "$(basename "$0")" "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian/Ubuntu packages the project needs, installed only when missing.
install_system_packages() {
  local wanted=(python3 python3-venv python3-dev debootstrap docker.io tini iptables ca-certificates docker-registry apache2-utils "$@")
  command -v node >/dev/null 2>&1 || wanted+=(nodejs)
  command -v npm >/dev/null 2>&1 || wanted+=(npm)
  local missing=()
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  # docker.io may be replaced by another engine package that already provides dockerd.
  if command -v dockerd >/dev/null 2>&1; then
    missing=("${missing[@]/docker.io/}")
  fi
  local -a todo=()
  for pkg in "${missing[@]}"; do [ -n "$pkg" ] && todo+=("$pkg"); done
  log "apt-get update"
  as_root apt-get update -qq
  if [ "${#todo[@]}" -gt 0 ]; then
    log "installing: ${todo[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${todo[@]}" >/dev/null
  fi
}

# The project in a virtual environment, with its labextension built by `pip install`.
install_project() {
  local extras=${1:-}
  if [ ! -x "$venv/bin/python" ]; then
    # The distribution's Python, not one under a home directory (pyenv): the tests run a server
    # as another user, who must be able to execute the environment's interpreter.
    local python=/usr/bin/python3
    [ -x "$python" ] || python=$(command -v python3)
    log "creating $venv with $python"
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  log "pip install -e .${extras} (builds the labextension with npm)"
  PATH="$venv/bin:$PATH" "$venv/bin/python" -m pip install -q -e ".${extras}" 2>&1 \
    | grep -v -e "^WARNING: Location" -e "is neither a file nor a directory" >&2 || true
  "$venv/bin/python" -c "import jupyter_gpu_containers" \
    || { log "the package did not install"; return 1; }
}

# The host state directory every Jupyter server on the host shares (GPU allocation, which servers
# are alive): root's, group docker, mode 1770, and a tmpfiles.d entry that makes it again at boot.
setup_host() {
  log "jupyter gpu-containers setup-host"
  as_root "$venv/bin/jupyter" gpu-containers setup-host >/dev/null
}

# Everything both commands need, in order: packages (any arguments after the first two are extra
# Debian packages), a running engine, the local images (demo or test), the project itself (with
# extras, e.g. "[test]"), and the host state directory.
prepare_machine() {
  local images=$1 extras=${2:-}
  shift "$(($# < 2 ? $# : 2))"
  cd "$repo"
  install_system_packages "$@"
  bash "$repo/scripts/ensure-docker.sh"
  bash "$repo/scripts/build-images.sh" "$images"
  install_project "$extras"
  setup_host
}
