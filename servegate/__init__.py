"""The ``servegate`` command and the local runtime: the one place that wires the gateway and
the autoscaler together (``servegate.cli``), the demo (``servegate.demo``) and the local Triton
workers that the demo, the tests, the benchmarks and the autoscaler's local actuator start
(``servegate.local``). ``gateway`` and ``autoscaler`` never import this package.
"""
