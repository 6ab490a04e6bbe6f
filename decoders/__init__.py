"""Decoders as scikit-learn-compatible estimators, and the nodes that run them online."""
