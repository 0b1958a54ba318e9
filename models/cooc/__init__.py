"""The co-engagement dimension: the counts and their store (``counts``: dense or per row, one
way to add to them), what is made of them (``model``: the update rule, the similarity rows and
scores, popularity, checkpoints), and the counts learned while serving (``online``: pair messages
and the aggregator's bounded, decayed neighbour rows; ``rows``: a worker's followed rows). ``from models.cooc import CoocModel,
CoocParams`` is all a caller needs."""
from models.cooc.counts import DENSE_MAX_ITEMS, CoocCounts
from models.cooc.model import ROW_CACHE_MAX, CoocModel, CoocParams

__all__ = ["DENSE_MAX_ITEMS", "ROW_CACHE_MAX", "CoocCounts", "CoocModel", "CoocParams"]
