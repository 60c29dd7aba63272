"""Sessions synced from gateways: `quota-pipeline sessions sync` reads a Tyk Gateway's key and
org sessions through its REST API and publishes what changed to quota.sessions and quota.orgs.
"""
