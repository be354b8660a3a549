"""HTTP, SSE and WebSocket surface of the gateway (Quart-Trio on Hypercorn)."""
