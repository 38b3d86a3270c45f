# The kernel service's image for Kubernetes (docs/kubernetes.md, "The service's image").
#
# Built by scripts/build-service-image.sh from a wheelhouse it makes first: the project with its
# `hub` and `kubernetes` extras, in the versions of the environment that built it, and pip itself.
# The build needs no network, so it works where only the build machine reaches a package index.
# BASE is any image with the same Python minor version and machine as that environment (the
# script checks both).
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# The script removes this stage's image once the build is done (it would be left untagged).
LABEL org.jupyter-gpu-containers.build-stage=kernel-service
USER root
COPY wheels/ /tmp/wheels/
# A virtual environment of its own: nothing of the base's Python packages leaks in, and pip runs
# straight from its wheel, so the base needs no pip (a Debian python3 without python3-pip will do).
RUN set -eu; \
    python3 -m venv --without-pip /opt/jupyter-gpu-containers; \
    pip_wheel=$(ls /tmp/wheels/pip-*.whl); \
    /opt/jupyter-gpu-containers/bin/python3 "$pip_wheel/pip" install --quiet --no-index \
        --no-cache-dir --find-links=/tmp/wheels 'jupyter_gpu_containers[hub,kubernetes]'

# The environment alone, without the wheelhouse's layer.
FROM ${BASE}
COPY --from=build /opt/jupyter-gpu-containers /opt/jupyter-gpu-containers
ENV PATH=/opt/jupyter-gpu-containers/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The Deployment (service.yaml) runs it as this uid, without a home: HOME and Jupyter's directories
# are emptyDirs it mounts, since the root file system is read-only.
USER 10001:10001
CMD ["jupyter", "gpu-containers", "serve"]
