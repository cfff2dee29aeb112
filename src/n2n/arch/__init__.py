"""The network view N2N searches over, and the rewrites its actions make.

``NetworkView.build(model, example_input)`` traces any torch.fx-traceable CNN
classifier into its layer sequence (with N2N state vectors and removable
flags) and its coupled channel groups. ``remove_layers`` and ``shrink_layers``
turn stage-1 and stage-2 actions into a child network; ``rebuild`` replays them
on a freshly built model so a student can be stored as spec + rewrites + weights.
"""

from n2n.arch.measure import arch_signature, count_flops, count_params
from n2n.arch.rewrite import DEFAULT_MIN_WIDTH, INIT_MODES, Rewrite, rebuild, remove_layers, shrink_layers
from n2n.arch.view import KINDS, STATE_DIM, LayerInfo, NetworkView, ShrinkGroup

__all__ = [
    "DEFAULT_MIN_WIDTH",
    "INIT_MODES",
    "KINDS",
    "STATE_DIM",
    "LayerInfo",
    "NetworkView",
    "Rewrite",
    "ShrinkGroup",
    "arch_signature",
    "count_flops",
    "count_params",
    "rebuild",
    "remove_layers",
    "shrink_layers",
]
