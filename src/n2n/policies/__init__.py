"""Policies: they read N2N layer-state sequences and emit discrete actions.

They know nothing of the torch modules being rewritten; ``n2n.search`` joins them
to the network view in ``n2n.arch``.
"""

from n2n.policies.io import load_policy, save_policy
from n2n.policies.output import PolicyOutput
from n2n.policies.removal import RemovalPolicy
from n2n.policies.shrink import DEFAULT_RATIOS, ShrinkPolicy

__all__ = ["DEFAULT_RATIOS", "PolicyOutput", "RemovalPolicy", "ShrinkPolicy", "load_policy", "save_policy"]
