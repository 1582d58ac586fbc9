"""CLI command groups (each module is thin; logic lives in the core package)."""
