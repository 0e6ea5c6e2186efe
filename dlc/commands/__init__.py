"""One module per ``dlc`` verb; each defines ``register(subparsers)``."""
