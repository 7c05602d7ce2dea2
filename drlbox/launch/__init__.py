"""drlbox.launch."""
