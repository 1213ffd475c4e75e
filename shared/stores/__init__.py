"""State stores: protocols, the embedded and Azure implementations, and the one place that picks them."""
