"""A local Messages-API server for tests and benchmarks; its answers come from the offline provider."""

from chorus.testing.stub.answering import FaultRule
from chorus.testing.stub.server import StubServer, main, make_server, serve_forever

__all__ = ["FaultRule", "StubServer", "main", "make_server", "serve_forever"]
