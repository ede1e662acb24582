"""ser: Self-Evolved Reward Learning as a config-driven experiment framework.

The package reads as the pipeline: data -> reward -> evolve -> policy -> evaluate.
"""

__version__ = "0.1.0"
