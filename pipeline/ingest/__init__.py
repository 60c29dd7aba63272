"""Ingest: gateways' own Kafka topics (Tyk Pump, APISIX kafka-logger) re-keyed by API key,
summed per key and second, into gateway.requests, exactly once (pipeline.engine.relay)."""
