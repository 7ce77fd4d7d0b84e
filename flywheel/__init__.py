"""Flywheel: a semi-supervised data flywheel for vision models."""

__version__ = "0.1.0"
