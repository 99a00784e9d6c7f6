"""The live page of ``grmp-edge run --serve`` (see :mod:`grmp_edge.runtime.web.server`)."""
from grmp_edge.runtime.web.server import WebSink, parse_address

__all__ = ["WebSink", "parse_address"]
