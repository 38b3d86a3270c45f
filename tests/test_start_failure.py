"""An administrator's malformed option stops the server with one sentence naming the option
(server/start_failure.py), never a server half the extension's: its managers installed, its
services missing, every kernel start failing with an error about something else. Real
`jupyter server` processes, each with one bad option; no engine is needed (the server stops
before it would reach one)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from servers import VENV_BIN, jupyter_env


@pytest.mark.parametrize(
    ("args", "config", "said"),
    [
        # A list's element of the wrong kind, on the command line (traitlets' words, placed).
        (
            ["--GPUInventory.static_gpus=[1]"],
            {},
            "The option GPUInventory.static_gpus is not valid: it contains a Dict of a List "
            "which expected a dict, not the str '[1]'.",
        ),
        # A number that is not one, in a config file.
        (
            [],
            {"PullManager": {"max_per_user": "two"}},
            "The option PullManager.max_per_user is not valid: it expected an int, not the "
            "str 'two'.",
        ),
        # This project's own check, which names its option itself.
        (
            [],
            {"ContainerPolicy": {"cap_add": ["NOT_A_CAPABILITY"]}},
            "ContainerPolicy.cap_add: 'NOT_A_CAPABILITY' is not a Linux capability name",
        ),
        # A declared GPU that is not one: the entry and the field named.
        (
            [],
            {"GPUInventory": {"static_gpus": [{"index": 0}, {"index": "one"}]}},
            'GPUInventory.static_gpus[1]: "index" must be a whole number',
        ),
    ],
)
def test_a_malformed_option_stops_the_server_with_a_sentence_naming_it(
    tmp_path: Path, args: list[str], config: dict[str, Any], said: str
) -> None:
    for sub in ("config", "data", "runtime", "workspace"):
        (tmp_path / sub).mkdir()
    config["ContainerPolicy"] = {
        **config.get("ContainerPolicy", {}),
        "state_dir": str(tmp_path / "state"),
    }
    config["Engine"] = {"docker_url": f"unix://{tmp_path}/no-engine-here.sock"}
    (tmp_path / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    argv = [
        str(VENV_BIN / "jupyter"),
        "server",
        "--no-browser",
        "--ip=127.0.0.1",
        "--port=0",
        f"--ServerApp.root_dir={tmp_path / 'workspace'}",
        *(["--allow-root"] if os.getuid() == 0 else []),
        *args,
    ]
    # Before the change the server served on without the extension: this run would not end.
    ended = subprocess.run(
        argv,
        env=jupyter_env(tmp_path),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = ended.stdout + ended.stderr
    assert ended.returncode == 1, output
    assert said in output, output
    assert "The server stops rather than serve without jupyter_gpu_containers." in output
    # One sentence, not jupyter_server's "failed loading" and its traceback.
    assert "extension failed loading" not in output, output
    assert "Traceback" not in output, output
    assert "is running at" not in output, output
