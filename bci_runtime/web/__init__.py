"""Local web apps served by the runtime."""
