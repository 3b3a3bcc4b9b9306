"""Benchmarks of reprogrid against plain diffusers, run by bench/run.sh."""
