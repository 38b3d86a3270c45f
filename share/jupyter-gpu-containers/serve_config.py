# The kernel service's configuration (`jupyter gpu-containers serve`), an example for a
# teaching lab. Copy it to /etc/jupyter-gpu-containers/serve_config.py (owner root, mode 0644:
# it holds no secret) and change what your host needs. docs/admin-guide.md explains each part;
# `jupyter gpu-containers serve --help-all` lists Jupyter Server's own options.
#
# Every value below is either the default (written out so you can see it) or a choice a
# teaching lab usually makes; the comments say which.

c = get_config()  # noqa: F821 - the Jupyter config loader provides it

# --- Where users' servers reach the service -------------------------------------------------
# Default: 127.0.0.1:8890, loopback only, which is right when users' servers run on this host
# (JupyterHub's LocalProcessSpawner, SystemdSpawner). Servers on other machines need another
# address, and then TLS: tokens and kernel traffic would otherwise cross the network in clear.
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.port = 8890
# c.ServerApp.ip = "0.0.0.0"
# c.ServerApp.certfile = "/etc/jupyter-gpu-containers/tls/service.crt"
# c.ServerApp.keyfile = "/etc/jupyter-gpu-containers/tls/service.key"

# --- Who users are --------------------------------------------------------------------------
# "auto" (default): JupyterHub's tokens when JUPYTERHUB_API_TOKEN is in the service's
# environment (the unit reads it from /etc/jupyter-gpu-containers/hub.env), else the token
# file below. Say "jupyterhub" or "tokens" to make a missing piece an error at start.
c.ServiceIdentityProvider.auth = "auto"
# Under JupyterHub: the Hub's API as the service reaches it, and the service's name in the
# Hub's c.JupyterHub.services (users' tokens need access:services!service=<this name>).
c.HubIdentity.api_url = "http://127.0.0.1:8081/hub/api"
c.HubIdentity.service_name = "gpu-containers"
# Without JupyterHub: per-user tokens (`jupyter gpu-containers token add USERNAME`).
c.ServiceTokens.tokens_file = "/etc/jupyter-gpu-containers/tokens"

# Each user's kernels run as their own uid:gid (from the account database) and mount this
# workspace, which must be a directory the user owns. System accounts never get kernels.
c.UserDirectory.workspace_template = "/home/{username}"
c.UserDirectory.min_uid = 1000
# Users without a system account, as "uid:gid":
# c.UserDirectory.accounts = {"guest01": "20001:20001"}

# --- What users may run and pull ------------------------------------------------------------
# Only the course's images become kernels, and only they may be pulled.
c.ContainerPolicy.allowed_images = ["nvcr.io/nvidia/pytorch:24.05-py3", "jgc/*"]
# Who may pull through the service: "allowed-images" (default: anyone, within the allow-list),
# "admins" (only admin_users), "nobody" (the administrator pulls on the command line).
c.ServiceApp.pull_policy = "admins"
c.ServiceApp.admin_users = []  # JupyterHub or token user names, e.g. ["teacher"]

# --- GPUs and limits ------------------------------------------------------------------------
c.GPUAllocator.policy = "exclusive"  # default: a GPU belongs to one kernel at a time
c.GPUAllocator.max_gpus_per_user = 1  # default 0 (no cap); counts all of a user's kernels
# Where NVML cannot be read (no driver library for the service's Python), list the GPUs:
# c.GPUInventory.static_gpus = [
#     {"index": 0, "uuid": "GPU-…", "name": "NVIDIA A100-SXM4-40GB", "memory_total": 42949672960},
# ]
# Idle GPUs given back (off by default; needs NVML): a kernel holding GPUs without using them
# for idle_minutes is warned, then after grace_minutes more restarted without its GPUs.
# c.GPUReclaim.enabled = True
# c.GPUReclaim.idle_minutes = 30
# c.GPUReclaim.grace_minutes = 10
# c.GPUReclaim.action = "restart-without-gpus"  # or "shutdown"
c.ContainerProvisioner.mem_limit = "32g"  # default: no limit
c.ContainerPolicy.max_mem_limit = "32g"  # kernel specs may ask for less, never more
c.ContainerPolicy.max_shm_size = "8g"

# --- Load ------------------------------------------------------------------------------------
c.ServiceApp.max_concurrent_starts = 8  # default: kernel starts under way at once
c.ServiceApp.max_queued_starts = 64  # default: more wait; one more is refused with a sentence

# --- Kernels users' servers left behind -----------------------------------------------------
# The service's defaults (Jupyter Server's own are "never"): an idle hour ends a kernel,
# looked at every minute. A kernel with a browser attached counts as idle too only with
# cull_connected.
c.MappingKernelManager.cull_idle_timeout = 3600
c.MappingKernelManager.cull_interval = 60
c.MappingKernelManager.cull_connected = False
