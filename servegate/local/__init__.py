"""The local runtime: small numpy models served by a real Triton (PyTriton), on one machine.

Who uses it: ``servegate demo`` (``servegate.demo``), the test fixtures and the benchmarks
(``launch.start_triton``), and the autoscaler's local actuator, which starts
``python -m servegate.local.triton_worker`` by module name (``contracts/autoscaling.py``)
without importing it. Neither ``gateway`` nor ``autoscaler`` imports this package.
"""
