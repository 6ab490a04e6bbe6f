"""Signal-processing nodes and the shipped pipeline graphs (``*.yaml`` in this folder)."""
