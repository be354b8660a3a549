"""Routes, one module per API surface; each exposes `register(app, services)`."""
