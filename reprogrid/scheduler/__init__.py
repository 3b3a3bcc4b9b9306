"""The scheduler: specs, grid expansion, recipes, batching, and dispatch of work.

Never imports ``reprogrid.worker`` or torch: workers are named by string.
"""
