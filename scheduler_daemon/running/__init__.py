"""Running fires: slots by priority, one fire's attempts, timeouts and retries, the actions."""
