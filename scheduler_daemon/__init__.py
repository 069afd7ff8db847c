"""scheduler_daemon: run recurring jobs from YAML, record every execution in PostgreSQL."""

__version__ = "0.1.0"
