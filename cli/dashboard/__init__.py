"""The live terminal dashboard: a snapshot model, a pure renderer, and the Live loop."""
