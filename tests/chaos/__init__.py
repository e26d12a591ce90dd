"""Fault injection against real components: every way a pilot, a client or Redis can stop."""
