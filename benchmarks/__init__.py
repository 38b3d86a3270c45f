"""Benchmarks for jupyter_gpu_containers (see benchmarks/README.md)."""
