"""`quota-pipeline bench`: every performance figure in one run (outside a worker's imports)."""
