"""LiteRT inference server for edgeai.fleet: KServe v2 / Open Inference Protocol over HTTP."""

__version__ = "0.1.0"
