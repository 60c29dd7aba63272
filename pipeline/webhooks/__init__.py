"""Webhook requests: bodies, Standard Webhooks signatures, the SSRF guard and the HTTP sink."""
