"""The edgeai.fleet device lab: simulated Jetson/Coral devices in Docker (see docs/lab.md)."""
