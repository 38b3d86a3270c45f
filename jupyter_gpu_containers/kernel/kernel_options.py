"""What a container kernel's options are: the traits of :class:`ContainerProvisioner`
(provisioner.py), which inherits them, so they are set as ``ContainerProvisioner.<name>`` for all
kernels in jupyter_server_config.py and per kernel spec (``metadata.kernel_provisioner.config``,
or ContainerKernelSpecManager.image_overrides); and what they say of the kernel's container
(:meth:`ContainerKernelOptions.options`, for the launch plan).
"""

from __future__ import annotations

from jupyter_client.provisioning import KernelProvisionerBase
from traitlets import Any, Dict, Enum, Float, Int, List, Unicode

from ..policy.launchplan import KernelOptions


class ContainerKernelOptions(KernelProvisionerBase):
    """The options of one container kernel (see the module's docstring): the provisioner's
    abstract base, so that its class and its traits are one (the contract's methods are the
    provisioner's)."""

    image = Unicode(config=True, help="The image reference the kernel runs in.")

    transport = Enum(
        ["ipc", "tcp"],
        "ipc",
        config=True,
        help="""How the server reaches the kernel. "ipc": ZMQ Unix sockets in the kernel's private
        directory, mounted into the container: no ports at all, and works with
        network_mode "none". "tcp": ZMQ over TCP, published on 127.0.0.1 only (never on
        0.0.0.0), where every local account can connect: IOPub (all of the kernel's output)
        needs no key to subscribe to, so tcp is for single-user hosts, and the kernel service
        refuses it. ipc is the default: it was measured at least as fast as tcp on these hosts
        (see the README) and exposes nothing.""",
    )

    network_mode = Unicode(
        "bridge",
        config=True,
        help="""The container's network: "bridge" (the default: outbound network for pip and
        datasets, on a network where no other user's kernel can connect to this one: on Docker
        the kernels' network, jupyter-gpu-containers-kernels, made with inter-container traffic
        off, not Docker's default bridge; on Podman PodmanEngine.network, a network of the
        container's own or, as root, one per user), "none" (no network; needs transport "ipc"),
        or, where the administrator lists it in ContainerPolicy.allowed_network_modes, "host"
        (the host's network: every account on the host reaches what the kernel serves) or a
        named network, which a kernel joins only when it keeps the containers on it apart
        (Docker: made with com.docker.network.bridge.enable_icc=false; root Podman: never).""",
    )

    workspace_mount_path = Unicode(
        "/workspace",
        config=True,
        help="""Where the server's root_dir is mounted (read-write) inside the container. The
        kernel's working directory is the notebook's directory under it.""",
    )

    run_as = Unicode(
        "server",
        config=True,
        help="""Which user the kernel runs as. "server" (default): the Jupyter server's own
        uid:gid, so files written to the workspace belong to the user. "image": the image's
        USER. Or an explicit numeric "uid:gid" ("uid" alone means "uid:uid"). Anything but
        "server" must be listed in ContainerPolicy.allowed_run_as. A kernel that would run as
        root (uid 0 or gid 0) is refused unless ContainerPolicy.allow_root is set.""",
    )

    home_path = Unicode(
        "/home/jupyter",
        config=True,
        help="""A writable HOME for kernels that run as the server's user (whose uid the image
        usually does not know): a tmpfs mounted here, and HOME, USER and LOGNAME set to match.
        It is also the home of the user's entry in the kernel's own /etc/passwd (its user
        first, then the image's accounts; mounted read-only, the image untouched). Ignored when
        run_as is "image".""",
    )

    shm_size = Unicode(
        "1g",
        allow_none=True,
        config=True,
        help="""Size of /dev/shm. Docker's default (64m) breaks PyTorch DataLoader workers and
        NCCL; NVIDIA recommends at least 1g for its framework images. None: Docker's default.
        At most ContainerPolicy.max_shm_size.""",
    )

    ulimits = Dict(
        config=True,
        help="""Resource limits, name -> value or [soft, hard], e.g. {"memlock": -1,
        "stack": 67108864} as NVIDIA recommends for NGC images; only those
        ContainerPolicy.allowed_ulimits names, up to its values. An engine that refuses one
        (memlock=-1 in unprivileged environments) fails the launch with the engine's reason.""",
    )

    environment = Dict(
        config=True,
        help="""Extra environment variables for the kernel. The server's own environment is
        never passed into containers, only these, the kernel spec's env, and JPY_SESSION_NAME.
        Names must be portable ([A-Za-z_][A-Za-z0-9_]*), values text without NUL of at most
        ContainerPolicy.max_env_value_bytes; NVIDIA_VISIBLE_DEVICES is the GPU allocator's.""",
    )

    runtime = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""The container runtime, e.g. "nvidia" for the NVIDIA runtime: one of
        ContainerPolicy.allowed_runtimes. None: the engine's default.""",
    )

    mem_limit = Unicode(
        None,
        allow_none=True,
        config=True,
        help="""Memory limit, e.g. "16g". None: ContainerPolicy.max_mem_limit (unlimited when that
        is None too). More than max_mem_limit is refused.""",
    )

    pids_limit = Int(
        4096,
        allow_none=True,
        config=True,
        help="""Maximum processes and threads in the container, so that a fork bomb in a notebook
        stops there instead of exhausting the host. Threads count: raise it for many DataLoader
        workers on hosts with many cores. None, or more than ContainerPolicy.max_pids_limit:
        that ceiling.""",
    )

    extra_labels = Dict(
        config=True,
        help="""Extra container labels. The project's own labels (org.jupyter.gpu-containers.*)
        cannot be overridden.""",
    )

    extra_mounts = List(
        Dict(),
        config=True,
        help="""Extra bind mounts: [{"source": "/raid/public/my_datasets", "target":
        "/root/dataset", "read_only": true}]. Read-only unless "read_only" is false, which only
        sources inside ContainerPolicy.writable_mount_roots may be. Each source is resolved with
        realpath and must exist and lie inside ContainerPolicy.allowed_mount_roots (or the
        workspace); each target must be a normalised absolute path that hides neither the
        workspace nor the kernel's private directory.""",
    )

    launch_timeout = Float(
        60.0,
        config=True,
        help="""Seconds from container creation until the kernel must answer. Image pulls are
        never counted: an image that is not on the host fails at once.""",
    )

    kernel_cmd = List(
        Unicode(),
        config=True,
        help="""The command run in the container (after the image's ENTRYPOINT), with
        {connection_file} replaced by the connection file's path in the container. Empty
        (default): find python3/python in the image and run ipykernel.""",
    )

    gpus = Any(
        None,
        allow_none=True,
        config=True,
        help="""The GPUs a kernel gets when its notebook asks for nothing else: a count (kernel
        specs of GPU images default to 1, CPU images to 0) or a list of GPU indexes/UUIDs. A
        notebook's own request (the /gpu-containers/notebooks endpoint) takes precedence.""",
    )

    gpu_resource = Unicode(
        "",
        config=True,
        help="""On Kubernetes: the resource this kernel's GPUs are requested as, such as a MIG
        profile "nvidia.com/mig-1g.10gb" (a kernel spec sets it in its provisioner config).
        Empty: KubernetesBackend.gpu_resource. Anything else must be in
        KubernetesBackend.allowed_gpu_resources. Docker ignores it.""",
    )

    log_tail_lines = Int(
        20, config=True, help="How many lines of the container's log a launch error quotes."
    )

    def options(self) -> KernelOptions:
        """What this kernel's options say of its container."""
        return KernelOptions(
            image=self.image,
            transport=self.transport,
            network_mode=self.network_mode,
            workspace_mount_path=self.workspace_mount_path,
            run_as=self.run_as,
            home_path=self.home_path,
            shm_size=self.shm_size,
            ulimits=dict(self.ulimits),
            environment=dict(self.environment),
            runtime=self.runtime,
            mem_limit=self.mem_limit,
            pids_limit=self.pids_limit,
            extra_labels=dict(self.extra_labels),
            extra_mounts=tuple(dict(m) for m in self.extra_mounts),
        )
