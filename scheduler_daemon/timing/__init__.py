"""Time: schedules (pure next_after), the heap loop, catch-up maths, the clock."""
