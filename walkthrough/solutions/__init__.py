"""Reference solutions of the exercises whose piece the package does not need (the rest: the package)."""
