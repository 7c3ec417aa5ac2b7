"""The autoscaler: signals -> pure policy -> actuators (see shared DESIGN.md).

Not built yet: it arrives with the autoscaler issues. The package exists so the layout and the
import boundaries (gateway and autoscaler never import each other) hold from the start.
"""
