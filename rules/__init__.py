"""The shipped taxonomy rules (one YAML file per rule), installed as coherence_diag.builtin_rules."""
