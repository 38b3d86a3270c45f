"""The Slurm backend: each kernel a Slurm job, in a container of its image (issue #30)."""
