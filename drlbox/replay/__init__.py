"""drlbox.replay."""
