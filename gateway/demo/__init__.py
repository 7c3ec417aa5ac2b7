"""Demo and test fixtures' Triton side: small numpy models served by a real Triton (PyTriton).

Nothing in the gateway's request path imports this package; it is started as its own process
(``python -m gateway.demo.triton_worker``) by ``servegate demo`` and by the test fixtures.
"""
