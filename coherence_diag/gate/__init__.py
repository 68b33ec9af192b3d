"""The CI gate: a policy file (data, never code) checked against a report, optionally a baseline."""
