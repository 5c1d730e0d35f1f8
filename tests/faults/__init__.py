"""Fault-injection tests: real Triton and Redis behind a switchable TCP proxy."""
