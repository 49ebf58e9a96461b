"""Peer simulators that ``fedsim bench --suite pfl`` measures side by side.

Each worker here is a standalone script run by a (possibly different) interpreter that has the
peer installed; it imports neither JAX nor fedsim.
"""
