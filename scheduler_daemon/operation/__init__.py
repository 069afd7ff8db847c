"""Operation: lifecycle and wiring, recovery, sd_notify, metrics, the admin API, the CLI."""
