"""Enterprise Gateway's own integration tests against the kernel service and container kernels.

Enterprise Gateway (EG) is the kernel gateway most teaching labs know; its integration tests
(``enterprise_gateway.itests``) drive a gateway with its own client, over REST and the kernel
websocket, as any stock client does. The service must pass them as EG does, a container kernel
of the Debian test image in place of EG's local ``python3``:

- ``TestPythonKernelLocal``: start, hello world, the kernel's hostname (a container's: twelve hex
  digits), a variable gone after a restart, an interrupt that leaves the kernel's state, scopes;
- ``TestAuthorization``: an authorized user starts a kernel and runs code, an unauthorized one is
  refused with 403. EG decides that from the name in the start request; the service from the
  token (the name in the request counts for nothing): "bob" is a student with a token, "bad_guy"
  one whose token the administrator has revoked.

EG's package comes from PyPI, pinned, without its server's dependencies (they pin a
jupyter_server older than this project's; the tests need only its client): ``scripts/test.sh``
installs it under ``.venv`` and names the folder in ``JGC_EG_ITESTS``. The R and Scala tests need
those kernels, and the Spark ones a cluster, none of which the service offers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEBIAN_IMAGE, kernel_name
from hostusers import needs_accounts
from servers import VENV_BIN
from service_process import KernelService

EG_ITESTS = os.environ.get("JGC_EG_ITESTS", "")
STUDENT = os.environ.get("JGC_TEST_STUDENT_A", "")
RUNNER = Path(__file__).with_name("enterprise_gateway_itests.py")
EG_TESTS = [
    "enterprise_gateway.itests.test_python_kernel.TestPythonKernelLocal",
    "enterprise_gateway.itests.test_authorization.TestAuthorization",
]

pytestmark = [
    needs_accounts,
    pytest.mark.skipif(
        not EG_ITESTS, reason="JGC_EG_ITESTS names no Enterprise Gateway (scripts/test.sh does)"
    ),
]


def test_enterprise_gateways_own_integration_tests_pass_against_the_service() -> None:
    service = KernelService()
    try:
        student = service.add_user(STUDENT)
        # A revoked token: what a user the administrator has taken off the service holds.
        revoked = service.add_user_token_only("bad_guy")
        subprocess.run(
            [
                str(VENV_BIN / "jupyter"),
                "gpu-containers",
                "token",
                "revoke",
                "bad_guy",
                f"--tokens-file={service.tokens_file}",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        service.start()
        env = {
            "PATH": f"{VENV_BIN}:/usr/bin:/bin",
            "HOME": str(service.home),
            "LANG": "C.UTF-8",
            "PYTHONPATH": EG_ITESTS,
            "GATEWAY_HOST": f"127.0.0.1:{service.port}",
            "KERNEL_USERNAME": "bob",
            "PYTHON_KERNEL_LOCAL_NAME": kernel_name(DEBIAN_IMAGE),
            "AUTHORIZATION_KERNEL_NAME": kernel_name(DEBIAN_IMAGE),
            # EG appends "*" to it; the output is the repr of `hostname`'s bytes.
            "ITEST_HOSTNAME_PREFIX": r"^b'[0-9a-f]{12}\\n'",
            "JGC_EG_TOKENS": json.dumps({"bob": student.token, "bad_guy": revoked.token}),
        }
        run = subprocess.run(
            [sys.executable, str(RUNNER), *EG_TESTS],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        report = run.stdout + run.stderr
        assert run.returncode == 0, report
        assert "Ran 7 tests" in report and "\nOK" in report, report
        assert "skipped" not in report, report

        # EG's tests shut their kernels down: none is left.
        code, kernels = asyncio.run(service.answer(student, "GET", "api/kernels"))
        assert (code, kernels) == (200, []), (code, kernels)
    finally:
        service.close()
