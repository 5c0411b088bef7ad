"""Shared by the inference tests: probability rows over the six Bethesda classes."""

from annotation.bethesda import BETHESDA

UNIFORM = [1 / 6] * 6


def one_hot(label: str) -> list[float]:
    return [1.0 if name == label else 0.0 for name in BETHESDA]
