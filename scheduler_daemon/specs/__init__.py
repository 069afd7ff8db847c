"""The specs: the config and job models, and loading them from YAML with file:line errors."""
