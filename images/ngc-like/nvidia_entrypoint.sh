#!/bin/sh
# Stands in for NGC's /opt/nvidia/nvidia_entrypoint.sh: prints a banner, prepares the
# environment, then execs its arguments. Kernels must keep this ENTRYPOINT.
echo "== ${NVIDIA_PRODUCT_NAME:-NGC} =="
echo "NVIDIA Release ${NVIDIA_PYTORCH_VERSION:-unknown}"
export NGC_ENTRYPOINT_RAN=1
exec "$@"
