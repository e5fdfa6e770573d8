"""STOMP 1.0/1.1/1.2 front-end: every STOMP client becomes a spoolq client (see server.py)."""
