"""``tartok-tui decode``: committed tokens back into 16 kHz audio (see decode/run.py)."""
