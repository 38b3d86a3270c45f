"""How the server's warm pool (warmpool.py) starts a container: as a kernel of that image without
GPUs starts (a kernel manager and provisioner made as the server makes them, then the
provisioner's own pre_launch and launch_kernel), as the pool's.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any as AnyType

from jupyter_client.provisioning import KernelProvisionerFactory

from ..base.errors import ContainerKernelError
from ..base.records import KERNEL_DIR_IN_CONTAINER
from ..gpus.allocator import GPURequest
from .launch_request import launching
from .provisioner import ContainerProvisioner
from .warmpool import PoolEntry, StartContainer, Target, spec_fingerprint


def warm_container_starter(mkm: AnyType, ksm: AnyType) -> StartContainer:
    """How the server's warm pool (warmpool.py) starts a container: the way a kernel of that
    image without GPUs is started (a kernel manager and provisioner made as the server makes
    them, then the provisioner's own pre_launch and launch_kernel), as the pool's."""

    async def start(target: Target, pool_id: str) -> PoolEntry:
        pool_kernel_id = str(uuid.uuid4())
        # Kernel spec lookups read kernel spec directories: off the event loop.
        spec = await asyncio.to_thread(ksm.get_kernel_spec, target.kernel_name)
        km, _, _ = mkm.pre_start_kernel(target.kernel_name, {"kernel_id": pool_kernel_id})
        km.kernel_id = pool_kernel_id
        provisioner = KernelProvisionerFactory.instance(parent=mkm).create_provisioner_instance(
            pool_kernel_id, spec, parent=km
        )
        if not isinstance(provisioner, ContainerProvisioner):
            raise ContainerKernelError(
                f"the kernel spec {target.kernel_name} does not start container kernels."
            )
        provisioner.pool_id = pool_id
        with launching(gpus=GPURequest()):  # never GPUs: see warmpool.py
            kwargs = await provisioner.pre_launch(cwd=mkm.root_dir, env={})
            cmd = kwargs.pop("cmd")
            await provisioner.launch_kernel(cmd, **kwargs)
        made = provisioner.container_spec
        assert made is not None and provisioner.container_id and provisioner.connection_dir
        return PoolEntry(
            pool_kernel_id=pool_kernel_id,
            ref=target.ref,
            kernel_name=target.kernel_name,
            image_id=provisioner.container_image_id,
            fingerprint=spec_fingerprint(made),
            container_id=provisioner.container_id,
            connection_dir=provisioner.connection_dir,
            connection_info=provisioner.connection_info.copy(),
            connection_file=str(km.connection_file),
            working_dir=made.working_dir or KERNEL_DIR_IN_CONTAINER,
        )

    return start
