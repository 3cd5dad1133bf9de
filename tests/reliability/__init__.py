"""Helpers of the reliability tests: worker processes, fault injection, leak scanning."""
