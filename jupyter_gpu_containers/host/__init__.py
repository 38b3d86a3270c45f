"""The host's own state: the root-provisioned state directory, kernels' private
directories and account files, a kernel service's users and their tokens."""
