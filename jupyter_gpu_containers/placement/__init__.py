"""Where a kernel's container goes and which GPUs it gets, one placement per kind of engine,
chosen once (services.py): on a host, the GPU ledger under the host-wide lock, the fair queue,
quotas and the warm pool (host.py); on a cluster, the scheduler, under a per-user cap
(cluster.py). The provisioner calls its placement once, the same way for every engine."""
