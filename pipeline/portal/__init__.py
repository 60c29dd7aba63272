"""Portal and dashboard events: to each org's webhook and email, to developers, and key request
digests.
"""
