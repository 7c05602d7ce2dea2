"""drlbox.layers."""
