"""shopkart: a tiny shopping-cart domain model."""

__version__ = "0.1.0"
