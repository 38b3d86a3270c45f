"""Another student on the UI tests' host (queue.spec.ts): a host state directory as `setup-host`
makes one, shared with the UI test's server, and a Jupyter server of a second local account
(JGC_TEST_PEER, in the docker group) whose kernel holds the host's one GPU. The queue counts GPUs
per user: a user who holds the only GPU may not wait for it, so the holder must be someone else.

Prints one JSON line, {"state_dir": ...}, once the host state directory exists, and then
{"kernel": id} once the other student's kernel holds the GPU. Reads commands on stdin: "end"
shuts that kernel down (answers {"ended": true}); end of input stops the server and removes its
home and the state directory.

    python ui-tests/other_student.py GPU_UUID KERNEL_NAME
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hostusers import UserHome, host_state_dir
from servers import read_command


def say(**what: object) -> None:
    print(json.dumps(what), flush=True)


async def main(gpu_uuid: str, kernel_name: str) -> None:
    user = os.environ.get("JGC_TEST_PEER", "jgc-peer")
    with ExitStack() as stack:
        state = stack.enter_context(host_state_dir())
        say(state_dir=str(state))
        home = UserHome(
            user,
            {
                "ContainerPolicy": {"state_dir": str(state)},
                "GPUInventory": {
                    "static_gpus": [
                        {
                            "index": 0,
                            "uuid": gpu_uuid,
                            "name": "Tesla T4 (static)",
                            "brand": "tesla",
                            "compute_capability": "7.5",
                            "memory_total": 16 * 2**30,
                        }
                    ],
                    "static_driver_version": "535.104.05",
                    "static_cuda_version": "12.2",
                },
            },
        )
        stack.callback(home.close)
        server = home.start()
        code, kernel = await server.answer(
            "POST", "api", "kernels", body={"name": kernel_name, "env": {}}
        )
        if code != 201:
            raise SystemExit(f"the other student's kernel did not start ({code}): {kernel}")
        say(kernel=kernel["id"])
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, read_command)
            if line is None:
                break
            if line.strip() == "end":
                code, _ = await server.answer("DELETE", "api", "kernels", kernel["id"])
                say(ended=code == 204)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
