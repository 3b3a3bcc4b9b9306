"""GPU workers: checkpoints, determinism, generation, the image store, and batch execution.

Only this part imports torch, diffusers and transformers, and lazily, so the
CLI's database commands start fast.
"""

import warnings

# diffusers, transformers and huggingface_hub import tqdm.auto, which in a Jupyter kernel
# without ipywidgets warns "IProgress not found" on import. Their bars are off in a
# worker (checkpoints._load) and Reprogrid.run draws its own, so the warning only misleads.
warnings.filterwarnings("ignore", message="IProgress not found")
