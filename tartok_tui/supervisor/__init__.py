"""Supervisor: the tar queue, worker slots and processes, watches, and the run's state."""
