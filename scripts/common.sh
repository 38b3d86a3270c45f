# Shared set-up steps for scripts/demo.sh and scripts/test.sh (sourced, not run).
# Each step is idempotent: a second run on a prepared machine costs seconds.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${JGC_VENV:-$repo/.venv}

# Playwright (a dev dependency, for the UI tests) must never fetch browsers of its own: the UI
# tests use the distribution's Chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

# Each line says how long the script has run (bash's SECONDS): where a long run's time went.
log() { printf '\033[1m[%s %dm%02ds]\033[0m %s\n' "$(basename "$0")" $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }
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
  # Nothing missing: no `apt-get update` either (it costs seconds and needs the network).
  [ "${#todo[@]}" -gt 0 ] || return 0
  log "apt-get update; installing: ${todo[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${todo[@]}" >/dev/null
}

# pip says nothing it need not: no "a new release of pip is available", no "WARNING: The script
# ... is not on PATH" (the scripts are run from the environment by their full path).
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 PIP_NO_INPUT=1

# What an editable install depends on besides the Python sources, which it reads from the
# working tree: the dependencies, entry points and shared data (pyproject.toml and the files it
# copies into the environment), and the labextension, which `pip install -e` builds with npm and
# *copies* into the environment (share/jupyter/labextensions), so that a change of its sources,
# styles, schemas or node packages needs a new install. A hash of them all, with the extras.
install_inputs_hash() {
  local extras=$1
  { printf 'extras=%s\n' "$extras"
    "$venv/bin/python" -c 'import sys; print(sys.version)'
    cd "$repo" && {
      ls -d pyproject.toml package.json package-lock.json install.json tsconfig.json 2>/dev/null
      find labextension schema jupyter-config share -type f -not -path '*/__tests__/*' 2>/dev/null
    } | LC_ALL=C sort | while IFS= read -r f; do sha256sum -- "$f"; done
  } | sha256sum | cut -c1-32
}

# Whether the environment holds a finished install that serves `extras` (its stamp names the
# same inputs, with those extras or more).
install_is_current() {
  local extras=$1 installed h
  local -a enough=("$(install_inputs_hash "$extras")")
  # An install with the test extras serves every other command: [test] holds what [lab] and
  # [hub] hold (the demos after the tests, and the multi-user demo's smoke test within them).
  # The multi-user demo's [lab,hub] serves the single-user demo's [lab] (one demo after the other).
  [ "$extras" = "[test]" ] || enough+=("$(install_inputs_hash "[test]")")
  [ "$extras" != "[lab]" ] || enough+=("$(install_inputs_hash "[lab,hub]")")
  installed=$(cat "$venv/.jupyter-gpu-containers-install" 2>/dev/null || true)
  for h in "${enough[@]}"; do
    if [ "$installed" = "$h" ] \
       && [ -f "$venv/share/jupyter/labextensions/jupyter-gpu-containers/package.json" ] \
       && "$venv/bin/python" -c "import jupyter_gpu_containers" 2>/dev/null; then
      return 0
    fi
  done
  return 1
}

# The project in a virtual environment, with its labextension built by `pip install`. Skipped when
# the environment already holds an install of the same inputs (the stamp file records their hash
# once an install succeeded); a fresh clone (CI) has no environment and no stamp, and installs.
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
  local stamp=$venv/.jupyter-gpu-containers-install wanted
  wanted=$(install_inputs_hash "$extras")
  if install_is_current "$extras"; then
    log "the project in $venv is up to date: no pip install"
    return 0
  fi
  rm -f "$stamp"  # an install that stops half-way is not a finished one
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  log "pip install -e .${extras} (builds the labextension with npm)"
  local out status=0
  # The builder's `npm install` without its audit and funding requests: a registry round trip
  # and a report nobody reads here (demo-multiuser.sh's install says the same).
  out=$(PATH="$venv/bin:$PATH" npm_config_audit=false npm_config_fund=false \
    "$venv/bin/python" -m pip install -q -e ".${extras}" 2>&1) || status=$?
  # hatchling's notes on shared-data paths of an editable install are no news to anyone.
  printf '%s\n' "$out" \
    | grep -v -e '^$' -e "^WARNING: Location" -e "is neither a file nor a directory" >&2 || true
  [ "$status" -eq 0 ] || { log "pip install -e .${extras} failed"; return 1; }
  "$venv/bin/python" -c "import jupyter_gpu_containers" \
    || { log "the package did not install"; return 1; }
  echo "$wanted" >"$stamp"
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
  # A user outside the docker group (the demo's --podman mode) builds the images as root: the
  # engine is root's.
  if docker info >/dev/null 2>&1; then
    bash "$repo/scripts/build-images.sh" "$images"
  else
    as_root bash "$repo/scripts/build-images.sh" "$images"
  fi
  install_project "$extras"
  setup_host
}

# Rootless Podman for an account (the tests' and the single-user demo's): subordinate uid and gid
# ranges (useradd gives them where /etc/login.defs says so; else the next free 65536), its
# runtime directory as a login would make it, and its storage on native overlay. Without that
# configuration Podman falls back to vfs where /dev/fuse is root-only, and copies every image
# layer at each container start (a small image's `podman run` took 15.6 s so, 0.3 s on overlay).
ensure_rootless_podman() { # account
  local user=$1 uid gid home start
  uid=$(id -u "$user")
  gid=$(id -g "$user")
  home=$(getent passwd "$user" | cut -d: -f6)
  for file in /etc/subuid /etc/subgid; do
    if ! grep -q "^$user:" "$file" 2>/dev/null; then
      start=$(awk -F: 'BEGIN { m = 100000 } { e = $2 + $3; if (e > m) m = e } END { print m }' "$file" 2>/dev/null || echo 100000)
      log "giving $user subordinate ids $start-$((start + 65535)) ($file)"
      if [ "$file" = /etc/subuid ]; then
        as_root usermod --add-subuids "$start-$((start + 65535))" "$user"
      else
        as_root usermod --add-subgids "$start-$((start + 65535))" "$user"
      fi
    fi
  done
  as_root install -d -m 0755 /run/user
  [ -d "/run/user/$uid" ] || as_root install -d -m 0700 -o "$uid" -g "$gid" "/run/user/$uid"
  if [ ! -f "$home/.config/containers/storage.conf" ]; then
    log "$user's Podman storage on native overlay ($home/.config/containers/storage.conf)"
    as_root install -d -o "$uid" -g "$gid" "$home/.config" "$home/.config/containers"
    printf '[storage]\ndriver = "overlay"\n' | as_root tee "$home/.config/containers/storage.conf" >/dev/null
    as_root chown "$uid:$gid" "$home/.config/containers/storage.conf"
    # Storage made earlier on vfs cannot be switched in place: start it afresh, when it holds
    # nothing (else say how: a reset removes the user's images and containers).
    local as_user=(as_root setpriv --reuid="$user" --regid="$user" --init-groups env HOME="$home" XDG_RUNTIME_DIR="/run/user/$uid")
    if [ -z "$("${as_user[@]}" sh -c 'cd / && podman images -aq && podman ps -aq' 2>/dev/null)" ]; then
      "${as_user[@]}" sh -c 'cd / && podman system reset --force' >/dev/null 2>&1 || true
    elif [ "$("${as_user[@]}" sh -c 'cd / && podman info --format "{{.Store.GraphDriverName}}"' 2>/dev/null)" = vfs ]; then
      log "$user's Podman storage is on vfs and holds images: \`podman system reset\` (which removes them) moves it to overlay"
    fi
  fi
}
