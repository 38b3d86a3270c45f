"""How the UI tests' labs (ui-tests/slurm_lab.py, reclaim_lab.py, other_student.py) take their
commands on standard input, and that the servers they start do not share it.

A lab reads commands on a pipe from the browser test; the Jupyter server it started inherited
that pipe, and jupyter_lsp's ``npm prefix -g`` (node) set O_NONBLOCK on it for a while at the
server's start. The lab's read that then found no data was taken by Python for the end of input:
the lab ended at once, stopped its server and its Slurm cluster, and the browser was refused
(CI failed so twice)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from servers import Server, remove_tree, write_server_config

TESTS = Path(__file__).resolve().parent

# A lab's loop: each command echoed, then the end.
LAB = """
import sys
sys.path.insert(0, sys.argv[1])
from servers import read_command
print("ready", flush=True)
while (line := read_command()) is not None:
    print(line.strip(), flush=True)
print("end of input", flush=True)
"""


def test_a_lab_reads_on_when_another_process_made_its_input_non_blocking() -> None:
    read_end, write_end = os.pipe()
    # The flag belongs to the pipe's open file, which the lab shares: its first read finds it
    # set and no data, as when node had set it.
    os.set_blocking(read_end, False)
    lab = subprocess.Popen(
        [sys.executable, "-c", LAB, str(TESTS)],
        stdin=read_end,
        stdout=subprocess.PIPE,
        text=True,
    )
    os.close(read_end)
    try:
        with os.fdopen(write_end, "w") as commands:
            assert lab.stdout is not None
            assert lab.stdout.readline() == "ready\n"
            # Nothing to read yet, for a while: the loop of old (`for line in sys.stdin`) had
            # ended here. (Not a timed check: the lab must read on however long this waits.)
            time.sleep(0.5)
            commands.write("hold\n")
            commands.flush()
            assert lab.stdout.readline() == "hold\n"
            commands.write("free\n")
            commands.flush()
            assert lab.stdout.readline() == "free\n"
        # The real end of input still ends it.
        assert lab.stdout.readline() == "end of input\n"
        assert lab.wait(30) == 0
    finally:
        if lab.poll() is None:
            lab.kill()
            lab.wait()
        assert lab.stdout is not None
        lab.stdout.close()


def test_a_test_server_does_not_share_the_tests_standard_input(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "workspace").mkdir()
    write_server_config(home)
    server = Server(home, home / "workspace", [])
    try:
        assert os.readlink(f"/proc/{server.process.pid}/fd/0") == "/dev/null"
    finally:
        server.stop()
        remove_tree(home)
