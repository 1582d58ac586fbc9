"""Ray job entry points (thin: the logic lives in the ``mur`` package)."""
