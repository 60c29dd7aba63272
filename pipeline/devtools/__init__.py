"""Local peers and processes for the demo and the tests: broker script, worker processes, webhook
receiver, SMTP server.
"""
