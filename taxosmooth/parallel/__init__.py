"""Class-sharded losses: the classifier and the logits split over ranks by class, the loss exact.

:func:`shard_classes` says which classes each rank holds (consecutive in depth-first order); every loss
takes ``process_group=`` and then reads each rank's columns of the logits. See ``docs/scale.md``.
"""

from taxosmooth.parallel.decisions import crm_predict, node_probabilities, predict_node, topk
from taxosmooth.parallel.shards import ShardPlan, shard_bounds, shard_classes, shard_plan

__all__ = ["shard_classes", "shard_bounds", "shard_plan", "ShardPlan", "topk", "node_probabilities", "predict_node",
           "crm_predict"]
