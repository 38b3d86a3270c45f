"""Modules that moved into folders keep their old import paths, warning with the new ones (a
server's configuration may name a class by its module path)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from jupyter_gpu_containers.base.moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_is_the_new_module_with_a_warning(old: str) -> None:
    new = importlib.import_module(f"jupyter_gpu_containers.{MOVED[old]}")
    sys.modules.pop(f"jupyter_gpu_containers.{old}", None)
    with pytest.warns(DeprecationWarning, match=rf"moved to jupyter_gpu_containers\.{MOVED[old]}"):
        aliased = importlib.import_module(f"jupyter_gpu_containers.{old}")
    assert aliased is new
    assert new.__spec__ is not None
    assert new.__spec__.name == f"jupyter_gpu_containers.{MOVED[old]}"


def test_a_config_naming_an_old_class_path_gets_the_class() -> None:
    """As ServerApp.kernel_manager_class = '...kernelmanager.GPUContainersKernelManager' is
    resolved, in a fresh interpreter (the warning shown, not an error)."""
    code = (
        "import warnings; warnings.simplefilter('always');"
        "from traitlets.utils.importstring import import_item;"
        "from jupyter_gpu_containers.server.kernelmanager import GPUContainersKernelManager as K;"
        "assert import_item("
        "'jupyter_gpu_containers.kernelmanager.GPUContainersKernelManager') is K;"
        "print('same class')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "same class"
    assert "moved to jupyter_gpu_containers.server.kernelmanager" in done.stderr


def test_old_names_of_the_modules_that_became_folders() -> None:
    from jupyter_gpu_containers.gpus.inventory import GPUInventory
    from jupyter_gpu_containers.service.service import ServiceApp

    with pytest.warns(DeprecationWarning, match=r"gpus\.inventory\.GPUInventory"):
        from jupyter_gpu_containers.gpus import GPUInventory as old_inventory
    with pytest.warns(DeprecationWarning, match=r"service\.service\.ServiceApp"):
        from jupyter_gpu_containers.service import ServiceApp as old_app
    assert old_inventory is GPUInventory
    assert old_app is ServiceApp


def test_names_that_never_existed_still_fail() -> None:
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("jupyter_gpu_containers.no_such_module")
    with pytest.raises(ImportError, match="NoSuchThing"):
        from jupyter_gpu_containers.gpus import NoSuchThing  # noqa: F401
