"""Adapters to the systems outside servegate that both processes use.

``gateway`` and ``autoscaler`` never import each other; what both need to reach the outside
world (child processes today) lives here, with one error translation and one policy each.
Nothing here imports ``gateway`` or ``autoscaler``.
"""
