"""Endpoint-telemetry sanitizer: the Beam pipeline and its command line."""

__version__ = "0.1.0"
