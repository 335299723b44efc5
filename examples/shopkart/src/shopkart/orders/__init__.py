"""Carts, checkout and receipts."""
