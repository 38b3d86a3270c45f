"""What every UI-test server's configuration shares (start-server.sh, start-service.sh): this
run's container label, the images that are kernels, the host state and connection directories
under the server's home, and two static GPUs attached through the runc-backed "nvidia" runtime
the test command gives dockerd (there are no GPUs here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

UI_TEST_IMAGES = [
    "jgc/*",
    "jgc-test/ngc-like:24.05-py3",
    "jgc-test/no-ipykernel:latest",
    "jgc-test/conda-nonroot:latest",
    "127.0.0.1:*",  # the private registry's image, once pulled (pull.spec.ts)
    "localhost/jupyter-gpu-containers/saved/*",  # saved from a kernel's view (packages.spec.ts)
]

# Where kernels' environments are saved as images (ImageSaves.repository's default);
# saved_images.py removes this run's when its test ends.
SAVED_REPOSITORY = "localhost/jupyter-gpu-containers/saved"


# An image the administrator retired (environment.spec.ts; retired_image.py makes it exist, as
# another tag of the redirect, only while that test runs).
RETIRED_IMAGE = "jgc/ui-retired:2024"
RETIRED_REDIRECT = "jgc/debian-ipykernel:bookworm"
RETIRED_MESSAGE = "The course moved to the bookworm image in March."


def base_config(home: Path) -> dict[str, Any]:
    labels = {"org.jupyter.gpu-containers.test-run": os.environ["JGC_TEST_RUN"]}
    return {
        # The images the UI tests use are the kernels (and what the servers probe at start):
        # another test session on the machine (pytest's, run by hand beside these) builds,
        # retags and removes test images of its own, which would be cards in the Launcher too.
        "ContainerKernelSpecManager": {"image_include": UI_TEST_IMAGES},
        "ContainerProvisioner": {"extra_labels": labels},
        # Probe containers are test containers too (the leak checks count them).
        "KernelReadinessProbe": {"extra_labels": labels},
        # Saved images are the run's, removed by saved_images.py (and swept once it is over).
        "ImageSaves": {
            "extra_labels": {
                "org.jupyter.gpu-containers.test-image-run": labels[
                    "org.jupyter.gpu-containers.test-run"
                ]
            }
        },
        "ContainerPolicy": {
            "state_dir": str(home / "state"),
            # Short: kernels' ipc sockets live under it (107 bytes at most).
            "connection_dir_root": str(home / "conn"),
        },
        "GPUInventory": {
            "static_gpus": [
                {
                    "index": i,
                    "uuid": f"GPU-ui-{i}",
                    "name": "Tesla T4 (static)",
                    "brand": "tesla",
                    "compute_capability": "7.5",
                    "memory_total": 16 * 2**30,
                }
                for i in range(2)
            ],
            "static_driver_version": "535.104.05",
            "static_cuda_version": "12.2",
        },
        "GPUAllocator": {"attach_mode": "runtime"},
        "ImageCatalog": {
            "deprecated_images": {
                RETIRED_IMAGE: {"message": RETIRED_MESSAGE, "redirect": RETIRED_REDIRECT}
            }
        },
    }
