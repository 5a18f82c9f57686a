"""Durable execution: instances, the step journal, timers, events, the scheduler. Knows no tenants."""
