#!/bin/sh
# Slurm Epilog (slurm.conf: Epilog=/etc/slurm/jupyter-gpu-containers-epilog.sh) for nodes that run
# jupyter_gpu_containers kernels: removes a kernel's container that outlived its job.
#
# A kernel's job runs its container with the user's rootless Podman, whose conmon leaves the
# job's process group: where Slurm tracks a job's processes by process group
# (ProctrackType=proctrack/pgid), a job whose batch script was killed outright leaves the
# container running, holding the GPUs Slurm has already given to the next job. (With
# proctrack/cgroup the job's cgroup ends it all the same; this does no harm there.)
#
# slurmd runs it as root after every job on the node, with SLURM_JOB_ID and SLURM_JOB_USER set.
# It removes only the container named for this job, in this job's user's own Podman, as that
# user. It always exits 0: an Epilog that fails drains the node.
name="jupyter-slurm-job-${SLURM_JOB_ID:-}"
user="${SLURM_JOB_USER:-}"
case "${SLURM_JOB_ID:-}" in
  "" | *[!0-9]*) exit 0 ;;
esac
[ -n "$user" ] || exit 0
entry=$(getent passwd "$user") || exit 0
uid=$(printf '%s' "$entry" | cut -d: -f3)
gid=$(printf '%s' "$entry" | cut -d: -f4)
home=$(printf '%s' "$entry" | cut -d: -f6)
[ "$uid" != 0 ] || exit 0
runtime="/run/user/$uid"
[ -d "$runtime" ] || exit 0
setpriv --reuid="$uid" --regid="$gid" --init-groups \
  env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" XDG_RUNTIME_DIR="$runtime" \
  podman rm --force --time 0 --ignore "$name" >/dev/null 2>&1
exit 0
