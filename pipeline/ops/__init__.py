"""The ops page: what operators see of the consumer group, on every worker's web port."""
