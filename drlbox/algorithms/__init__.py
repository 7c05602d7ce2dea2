"""drlbox.algorithms."""
