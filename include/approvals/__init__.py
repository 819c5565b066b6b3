"""Approval gates: who may answer, what requests say, the ladder side effects."""
