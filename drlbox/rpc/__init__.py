"""drlbox.rpc."""
