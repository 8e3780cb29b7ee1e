"""spuraudit: find, measure and fix spurious correlations in image classifiers."""

__version__ = "0.1.0"
