"""Channel analysis by concept: :mod:`.graph` (tied channels, mask planning), :mod:`.rules`
(how each traced operation moves channels), :mod:`.attention` (attention heads).

The public entry points live in :mod:`shrinkbench_core.pruning.structured`.
"""
