"""drlbox.roles."""
