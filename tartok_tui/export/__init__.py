"""``tartok-tui export``: committed tokens into training formats (see export/run.py)."""
