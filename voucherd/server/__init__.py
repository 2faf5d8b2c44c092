"""The HTTP and WebSocket front door."""
