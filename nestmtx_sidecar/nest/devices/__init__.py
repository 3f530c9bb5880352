"""Nest devices: their sync into cameras, and their events over Pub/Sub with pictures."""
