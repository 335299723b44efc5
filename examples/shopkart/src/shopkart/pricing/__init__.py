"""Money arithmetic, discounts and sales tax."""
