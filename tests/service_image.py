"""The kernel service's image for test_k8s_deployment.py, built by scripts/build-service-image.sh
as docs/kubernetes.md says, on the suite's Debian base (it has the same Python as this
environment: no registry is reachable here).

The build mostly waits (the package index, docker build), so a session that will run the
deployment's tests starts it when they are collected (conftest.py) and the tests' fixture takes
it over later; the session's other tests run meanwhile. A build nobody took over is ended and its
image removed when the session ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEBIAN_IMAGE, TEST_RUN

REPO = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO / "scripts" / "build-service-image.sh"
TAG = f"jgc-test/kernel-service:{TEST_RUN}"
# A wheelhouse from a cold pip cache, then docker build.
BUILD_TIMEOUT = 600

_started: subprocess.Popen[str] | None = None


def start() -> subprocess.Popen[str]:
    """The build of :data:`TAG`, started once per session."""
    global _started
    if _started is None:
        # A session of its own, so that a build past its time is ended whole (pip, docker build):
        # the script's own clean-up then runs, and nothing tags the image after the test gave up.
        _started = subprocess.Popen(
            ["bash", str(BUILD_SCRIPT), TAG],
            env={**os.environ, "BASE": DEBIAN_IMAGE, "PYTHON": sys.executable},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
    return _started


def built() -> str:
    """Wait for the build (starting it if no one has) and return its tag; fail the test with the
    script's own words when it failed or did not end within :data:`BUILD_TIMEOUT` of this call."""
    build = start()
    try:
        out, err = build.communicate(timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(build.pid, signal.SIGTERM)
        out, err = build.communicate(timeout=60)
        pytest.fail(f"building the service's image took over {BUILD_TIMEOUT} s:\n{err}")
    assert build.returncode == 0, err
    assert out.strip() == TAG, out
    return TAG


def remove() -> None:
    """End a build still running and remove the image, whether or not it was used."""
    global _started
    build, _started = _started, None
    if build is not None and build.poll() is None:
        os.killpg(build.pid, signal.SIGKILL)
        build.communicate()
    if build is not None:
        subprocess.run(["docker", "rmi", "--force", TAG], capture_output=True, timeout=120)
