"""The `quota-pipeline` command line: arguments, files of sessions and orgs, topics, dlq and
replay.
"""
