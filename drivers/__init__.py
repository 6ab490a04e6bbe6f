"""Edges of the world: sources (LSL inlet, boards, file replay) and sinks (LSL outlet, feedback)."""
