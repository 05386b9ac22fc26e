"""selfreward: Self-Rewarding Language Models (Yuan et al., 2024) as a reproducible DVC pipeline."""

__version__ = "0.1.0"
