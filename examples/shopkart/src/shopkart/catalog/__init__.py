"""Products and stock levels."""
