"""Usage per quota period: the key and org agents, threshold crossings, held requests, org
partials.
"""
