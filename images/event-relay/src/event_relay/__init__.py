"""edgeai.fleet event relay: durable, signed, ordered delivery of device events to a webhook."""

__version__ = "0.1.0"
