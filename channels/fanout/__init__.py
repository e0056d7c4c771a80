"""Fan-out: committed events to this instance's connections, per channel, in order.

``Fanout`` (fanout.py) is the entry point; the parts, one concept each: which
channels are live (activation.py), the order buffer (ordering.py), the hand-off
to connections (handoff.py), gap filling from the store (gapfill.py,
positions.py), joining with recovery (recovery.py), and the rule after a commit
(commit.py).
"""

from .commit import after_commit
from .fanout import Fanout
from .recovery import JoinResult, can_recover

__all__ = ["Fanout", "JoinResult", "after_commit", "can_recover"]
