"""reprogrid: deterministic, fully recorded diffusion image grids, embedded or on a fleet."""

__version__ = "0.1.0"
