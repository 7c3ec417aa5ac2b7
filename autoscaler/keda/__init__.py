"""KEDA's external scaler, served by the autoscaler (``--actuator keda``).

``externalscaler.proto`` is KEDA's contract (REFERENCE §6); ``externalscaler_pb2*.py`` are
generated from it by grpcio-tools and committed (regenerate with the command at the top of
the .proto). :mod:`autoscaler.keda.server` implements the service.
"""
