"""The taxonomy rules engine: rule files (data), the expression language, evaluation."""
