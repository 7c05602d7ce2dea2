"""Code generated from protos/ by `make protos`."""
