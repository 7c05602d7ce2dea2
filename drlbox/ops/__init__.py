"""drlbox.ops."""
