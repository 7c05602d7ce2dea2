"""drlbox: deep reinforcement learning as a black box."""
__version__ = "0.1.0"
