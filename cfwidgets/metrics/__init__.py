"""Shared metrics: validity, proximity, sparsity, realism (IM1/IM2), oracle agreement, cost."""

from .core import (
    compare,
    evaluate,
    format_table,
    im1,
    im2,
    l1,
    l1_sum,
    l2,
    oracle_agreement,
    sparsity,
    target_probability,
    validity,
)

__all__ = ["compare", "evaluate", "format_table", "im1", "im2", "l1", "l1_sum", "l2",
           "oracle_agreement", "sparsity", "target_probability", "validity"]
