"""How a process computes on the CPU: its thread count and what it does with freed memory."""
