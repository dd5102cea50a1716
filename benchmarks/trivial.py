"""Trivial job functions for the engine benchmark (importable by the task farm's workers)."""

from matdx.workflows import job


@job
def increment(value: int) -> int:
    return value + 1


@job
def gather(values: list[int]) -> int:
    return sum(values)
