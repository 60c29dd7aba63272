"""quota-pipeline: quota threshold alerts for API gateways, as a Kafka streaming pipeline."""

from __future__ import annotations

__version__ = "0.15.0"
