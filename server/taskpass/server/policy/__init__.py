"""Policy-as-code: YAML rules with typed CEL conditions, decided at request time."""
