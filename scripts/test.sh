#!/usr/bin/env bash
# The test command. On a fresh Debian/Ubuntu machine it installs and starts everything it needs
# (apt packages, dockerd with a runc-backed "nvidia" runtime, the test images, node packages, the
# labextension build, a non-root test user), then runs the linters and every test suite once.
#
#   scripts/test.sh            everything
#   scripts/test.sh -k expr    extra arguments go to pytest
set -euo pipefail
# Nothing here reads standard input, and CI may start this with none at all. A closed fd 0 is
# taken by the next file a process opens, and pytest's capture (IPython's import under it, for
# one) assumes a real one: give every process below /dev/null.
exec </dev/null
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# Chromium for the UI tests (playwright drives it; it never downloads a browser). For the
# Kubernetes tests: etcd, containerd, runc and the CNI plugins from Debian (the control plane and
# the kubelet are built from the Kubernetes sources below).
# Rootless Podman for the Podman backend's tests: podman, its subordinate-id helpers and its init.
# Slurm for the Slurm backend's tests (a cluster of their own: tests/slurm_cluster.py starts its
# daemons, slurmdbd and its MariaDB included; the packages' services are not used).
packages=(chromium etcd-server containerd runc containernetworking-plugins gcc libc6-dev
  podman uidmap catatonit slirp4netns munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
install_system_packages "${packages[@]}"
cd "$repo"

# The Kubernetes binaries, built from the Kubernetes sources as Go modules, once per machine
# (cached by version outside the clone; a cold build takes minutes: README). Go must be on the
# machine, 1.21 or later (which fetches the toolchain the sources want through the module proxy):
# the build script says so when it is not.
# A cold build is minutes of CPU: it runs in the background, at a lower priority, from as early as
# it can (the packages it needs are in), while the machine's preparation, the checks and the tests
# that need no cluster run. The first test that needs the binaries waits for them (tests/conftest.py:
# through the same script, which waits for this build under its lock and then prints the
# directory) before its time limit starts: the engines' session runs Podman's and Slurm's tests
# meanwhile, then Kubernetes' and the benchmark's run of those engines' sections
# (tests/conftest.py, _engines_part). KWOK's controller is built last, under a lock of its own:
# only the benchmark's cluster at scale waits for it (tests/k8s_cluster.py, kwok_binary).
k8s_build=""
if JGC_K8S_BIN=$(bash scripts/build-kubernetes.sh --if-built); then
  log "Kubernetes binaries: $JGC_K8S_BIN"
  export JGC_K8S_BIN
else
  k8s_build_log=$(mktemp /tmp/jgc-build-kubernetes.XXXXXX)
  log "Kubernetes binaries: building them in the background, once per machine (log: $k8s_build_log)"
  # A process group of its own (setsid execs; its pid is the group's id): go and its compilers
  # go with it.
  setsid nice -n 10 bash scripts/build-kubernetes.sh >"$k8s_build_log" 2>&1 &
  k8s_build=$!
  # Only if this script ends first (a failure before the tests): the build is ours to stop.
  trap '[ -z "$k8s_build" ] || kill -- "-$k8s_build" 2>/dev/null || true' EXIT
fi

prepare_machine test "[test]" "${packages[@]}"

# Enterprise Gateway's own integration tests and client (tests/test_enterprise_gateway.py), pinned.
# Without its dependencies, in a folder of its own: they pin a jupyter_server and jupyter_client
# older than this project's, and the tests need only the client (requests, websocket-client,
# tornado, all in the environment already).
export JGC_EG_ITESTS=${JGC_EG_ITESTS:-$venv/enterprise-gateway-3.3.0}
if [ ! -f "$JGC_EG_ITESTS/enterprise_gateway/itests/test_python_kernel.py" ]; then
  log "Enterprise Gateway 3.3.0's integration tests (no dependencies) into $JGC_EG_ITESTS"
  rm -rf "$JGC_EG_ITESTS.partial"
  "$venv/bin/python" -m pip install -q --no-deps --target "$JGC_EG_ITESTS.partial" \
    jupyter_enterprise_gateway==3.3.0
  rm -rf "$JGC_EG_ITESTS" && mv "$JGC_EG_ITESTS.partial" "$JGC_EG_ITESTS"
fi

# Real local accounts (sessions and CI run as root). Two non-root users in the docker group run
# Jupyter servers of their own: the tests prove that files come out owned by the user, and replay
# attacks of one user on another's server (tests/test_shared_host.py). A third account is outside
# the docker group: a local user with only a shell. (Being in the docker group is root on the host
# by another road; the tests prove the extension itself hands nothing over.) Two students, outside
# the docker group, get kernels only through the kernel service, their servers spawned by a real
# JupyterHub (tests/hub.py, tests/test_hub_auth.py). One more, outside the docker group, runs
# kernels on its own rootless Podman (tests/podman_user.py).
ensure_account() { # name, "docker" or ""
  if ! id "$1" >/dev/null 2>&1; then
    log "creating the test account $1"
    as_root useradd --create-home --shell /bin/bash "$1"
  fi
  if [ "$2" = docker ]; then
    as_root usermod -aG docker "$1"
  else
    as_root gpasswd -d "$1" docker >/dev/null 2>&1 || true
  fi
}
if [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; then
  export JGC_TEST_USER=${JGC_TEST_USER:-jgc-tester}
  export JGC_TEST_PEER=${JGC_TEST_PEER:-jgc-peer}
  export JGC_TEST_OUTSIDER=${JGC_TEST_OUTSIDER:-jgc-outsider}
  export JGC_TEST_STUDENT_A=${JGC_TEST_STUDENT_A:-jgc-student-a}
  export JGC_TEST_STUDENT_B=${JGC_TEST_STUDENT_B:-jgc-student-b}
  ensure_account "$JGC_TEST_USER" docker
  ensure_account "$JGC_TEST_PEER" docker
  ensure_account "$JGC_TEST_OUTSIDER" ""
  ensure_account "$JGC_TEST_STUDENT_A" ""
  ensure_account "$JGC_TEST_STUDENT_B" ""
  export JGC_TEST_PODMAN_USER=${JGC_TEST_PODMAN_USER:-jgc-podman-user}
  ensure_account "$JGC_TEST_PODMAN_USER" ""
  ensure_rootless_podman "$JGC_TEST_PODMAN_USER"
  # The students' Slurm jobs run their kernels' containers in their own rootless Podman on the
  # node (tests/test_slurm_jobs.py).
  ensure_rootless_podman "$JGC_TEST_STUDENT_A"
  ensure_rootless_podman "$JGC_TEST_STUDENT_B"
fi

export PATH="$venv/bin:$PATH"
# Every container the tests start carries this run's label; only those are checked at the end,
# so kernels of a demo server on the same engine are never counted (or touched).
export JGC_TEST_RUN=${JGC_TEST_RUN:-$(date +%s)-$$}
status=0
# What failed, said again in a few lines at the very end: CI shows a run's last lines, and a
# failed test's report is hundreds of lines above them (under the UI tests' output).
failures=$(mktemp /tmp/jgc-failures.XXXXXX)
failed() { log "FAILED: $*"; echo "$*" >>"$failures"; }
run() { log "$*"; "$@" || { status=1; failed "$*"; }; }

# pytest, in two sessions side by side (tests/conftest.py, --jgc-part): the other engines' tests
# (Kubernetes, rootless Podman, Slurm) and the tests that need no engine in one, the rest (Docker's,
# the longer) in the other. The engines' part's cluster and kubelet run pods in a containerd of
# their own, Podman's tests an account's own Podman, Slurm's a Slurm of their own: they share
# nothing with the Docker tests but the machine; most of their time is spent waiting on them,
# which the other session's tests fill. Its tests that need the Kubernetes binaries come last and
# wait for the background build above, if any (conftest.py), so that no test's time limit counts
# the build. Its containers carry a test-run label of their own. pytest exits 5 when it collected
# no test: a part may (extra arguments can select one part's tests only), both may not.
#
# The linters and jest go first in the engines' lane: minutes of CPU the rest's session need not
# wait for. The lane's output is kept in a file and shown when both are done.
engines_label="k8s-$JGC_TEST_RUN"
ui_label="ui-$JGC_TEST_RUN"
# The UI tests' labextension build (a development build), now: made while the rest's tests run,
# its files rewritten in place would be read half-written (the servers', `jupyter labextension
# list`).
run npm run --silent build
log "the checks and the other engines' tests, beside the rest's pytest session (their output follows its)"
lane_log=$(mktemp /tmp/jgc-lane.XXXXXX)
lane_status=$(mktemp /tmp/jgc-lane-status.XXXXXX)
ui_engine_file=$(mktemp /tmp/jgc-ui-engine.XXXXXX)
ipv6_default=$(sysctl -n net.ipv6.conf.default.disable_ipv6 2>/dev/null || true)
restore_ipv6() {
  [ -z "$ipv6_default" ] || as_root sysctl -qw net.ipv6.conf.default.disable_ipv6="$ipv6_default"
}
(
  set +e
  checks=0
  check() { log "$*"; "$@" || { checks=1; failed "$*"; }; }
  check ruff check jupyter_gpu_containers tests benchmarks ui-tests
  check ruff format --check jupyter_gpu_containers tests benchmarks ui-tests
  check mypy
  check npm run --silent lint:check
  check npm test --silent -- --ci
  # Its own cache directory: two sessions writing one "lastfailed" file would mix them.
  JGC_TEST_RUN=$engines_label python -m pytest --jgc-part engines \
    -o cache_dir=.pytest_cache/kubernetes-part --durations=10 "$@"
  engines_rc=$?
  # The UI tests, after the other engines' (their Slurm lab would meet the Slurm tests' cluster),
  # beside the rest's session: JupyterLab in Chromium against servers of their own
  # (ui-tests/start-server.sh), on the labextension built above, with a test-run label of their
  # own, on a Docker engine of their own (ui-tests/start-engine.sh). On the machine's engine they
  # failed beside the rest's session (fresh runs 35 and 36): their servers' kernels, root's, were
  # seen by the rest's tests of a user's kernels and GPUs, and their panels probed the images the
  # rest's tests build for a moment.
  if true; then
    if ui_engine=$(bash ui-tests/start-engine.sh); then
      # Ports picked now, below the range the kernel hands out for port 0 (the rest's tests bind
      # those all the time; one taken between this pick and the server's bind would fail it).
      read -r UI_TEST_PORT UI_TEST_NO_ENGINE_PORT UI_TEST_SERVICE_PORT UI_TEST_HUB_PORT \
        UI_TEST_HUB_SERVICE_PORT < <(python ui-tests/free_ports.py 5)
      export UI_TEST_PORT UI_TEST_NO_ENGINE_PORT UI_TEST_SERVICE_PORT UI_TEST_HUB_PORT UI_TEST_HUB_SERVICE_PORT
      ui_log=$(mktemp /tmp/jgc-ui.XXXXXX)
      ui_tests_in_chromium() { npm run --silent ui-test:run 2>&1 | tee "$ui_log"; }
      # Chromium fails the requests in flight at each change of the host's addresses
      # (net::ERR_NETWORK_CHANGED), and each container start made one: the IPv6 link-local
      # address of its veth on the host. Beside the rest's tests, which start containers all the
      # time, a page's stylesheet failed so (fresh run 18). New interfaces get no IPv6 while the
      # UI tests run (everything here is IPv4 loopback; a container's own loopback keeps ::1);
      # the machine's setting comes back after them, and at this script's end.
      if [ -n "$ipv6_default" ]; then
        as_root sysctl -qw net.ipv6.conf.default.disable_ipv6=1
      fi
      DOCKER_HOST=$ui_engine JGC_TEST_RUN=$ui_label check ui_tests_in_chromium
      restore_ipv6
      # playwright's list reporter marks a failed test's line with a cross.
      grep -a '✘' "$ui_log" | sed 's/^ */playwright: /' >>"$failures" || true
      rm -f "$ui_log"
      echo "$ui_engine" >"$ui_engine_file"
    else
      checks=1
      failed "the UI tests' Docker engine did not start (ui-tests/start-engine.sh)"
    fi
  fi
  echo "$checks $engines_rc" >"$lane_status"
) >"$lane_log" 2>&1 &
lane=$!
trap '[ -z "$k8s_build" ] || kill -- "-$k8s_build" 2>/dev/null || true; [ -z "$lane" ] || kill "$lane" 2>/dev/null || true; restore_ipv6 || true' EXIT
set +e
# The slowest tests are named at the end of each part: where the time budget goes. The output is
# kept too, for its short summary of failures (below).
rest_log=$(mktemp /tmp/jgc-rest.XXXXXX)
color=no
[ ! -t 1 ] || color=yes
python -m pytest --jgc-part rest --durations=20 --color=$color "$@" 2>&1 | tee "$rest_log"
rc=${PIPESTATUS[0]}
wait "$lane"
set -e
lane=""
log "the checks and the other engines' tests (they ran beside the tests above):"
cat "$lane_log"
read -r checks_rc k8s_rc <"$lane_status" || { checks_rc=1; k8s_rc=1; }
[ "$checks_rc" -eq 0 ] || status=1
# pytest's short summary lines ("FAILED tests/...::test - why", "ERROR ..."), both sessions'.
grep -ahE '^(FAILED|ERROR) ' "$rest_log" "$lane_log" | sed 's/^/pytest: /' >>"$failures" || true
# The lane's checks said theirs through failed() already; its lines are not said twice.
rm -f "$lane_log" "$lane_status" "$rest_log"
if [ "$rc" -eq 5 ] && [ "$k8s_rc" -eq 5 ]; then
  failed "pytest collected no tests"
  status=1
elif { [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; } || { [ "$k8s_rc" -ne 0 ] && [ "$k8s_rc" -ne 5 ]; }; then
  failed "pytest (the rest: status $rc; the other engines' part: status $k8s_rc)"
  status=1
fi

if [ -n "$k8s_build" ]; then
  # The Kubernetes tests waited for it; its own words if it failed.
  if ! wait "$k8s_build"; then
    failed "building the Kubernetes binaries (scripts/build-kubernetes.sh); its last words:"
    tail -n 30 "$k8s_build_log" >&2
    status=1
  fi
  k8s_build=""
  rm -f "$k8s_build_log"
fi

run_label=org.jupyter.gpu-containers.test-run=$JGC_TEST_RUN
for label in "$run_label" "org.jupyter.gpu-containers.test-run=$engines_label"; do
  leftover=$(docker ps -aq --filter "label=$label" | wc -l)
  if [ "$leftover" -gt 0 ]; then
    failed "$leftover container(s) of this test run left on the engine"
    docker ps -a --filter "label=$label" >&2
    status=1
  fi
done
# ...and on the UI tests' own engine.
ui_engine=$(cat "$ui_engine_file")
rm -f "$ui_engine_file"
if [ -n "$ui_engine" ]; then
  label="org.jupyter.gpu-containers.test-run=$ui_label"
  leftover=$(DOCKER_HOST=$ui_engine docker ps -aq --filter "label=$label" | wc -l)
  if [ "$leftover" -gt 0 ]; then
    failed "$leftover container(s) of the UI tests left on their engine ($ui_engine)"
    DOCKER_HOST=$ui_engine docker ps -a --filter "label=$label" >&2
    status=1
  fi
fi
# ...and on the Podman account's own engine (its containers are in its storage, not Docker's).
if [ -n "${JGC_TEST_PODMAN_USER:-}" ]; then
  for label in "$run_label" "org.jupyter.gpu-containers.test-run=$engines_label"; do
    leftover=$(as_root setpriv --reuid="$JGC_TEST_PODMAN_USER" --regid="$JGC_TEST_PODMAN_USER" --init-groups \
      env HOME="$(getent passwd "$JGC_TEST_PODMAN_USER" | cut -d: -f6)" XDG_RUNTIME_DIR="/run/user/$(id -u "$JGC_TEST_PODMAN_USER")" \
      sh -c 'cd / && podman ps -aq --filter "label=$1"' sh "$label" | wc -l)
    if [ "$leftover" -gt 0 ]; then
      failed "$leftover container(s) of this test run left on $JGC_TEST_PODMAN_USER's Podman"
      status=1
    fi
  done
fi
# ...and on root's Podman (a kernel service's engine in test_podman.py).
leftover=$(as_root podman ps -aq --filter "label=$run_label" | wc -l)
if [ "$leftover" -gt 0 ]; then
  failed "$leftover container(s) of this test run left on root's Podman"
  status=1
fi
if [ "$status" -eq 0 ]; then
  log "done: every check and test passed"
else
  log "FAILED: see the lines marked FAILED above; in short:"
  sed 's/^/  /' "$failures" >&2
fi
rm -f "$failures"
exit "$status"
