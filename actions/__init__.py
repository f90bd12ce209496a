"""Built-in actions plugins."""
