"""Inference backends; each module imports its library only when its class is built."""
