"""Analyses built on many counterfactuals: bias discovery (which attributes a classifier
relies on, the use GCI was made for) and attribute walks / what-if decoding."""

from .bias import AttributeRanking, aggregate, rank_attributes
from .whatif import decode_attributes, walk

__all__ = ["AttributeRanking", "aggregate", "rank_attributes", "decode_attributes", "walk"]
