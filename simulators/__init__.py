"""Synthetic neural signal generators that stand in for hardware."""
