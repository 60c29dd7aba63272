"""The worker process: wiring of every stage, web probes, HTTP API, metrics, the org directory, log
redaction.
"""
