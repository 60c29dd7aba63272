"""Deliveries of events: jobs, the deliverer with its breaker and cooldown, retry tiers and dead
letters.
"""
