"""Delivery channels: each turns a ready request into one attempt and a classified outcome."""
