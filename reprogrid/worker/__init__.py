"""GPU workers: checkpoints, determinism, generation, the image store, and batch execution.

Only this part imports torch, diffusers and transformers, and lazily, so the
CLI's database commands start fast.
"""
