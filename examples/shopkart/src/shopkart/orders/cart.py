"""A shopping cart holding products and quantities."""

from collections.abc import Iterator
from dataclasses import dataclass

from shopkart.catalog.products import Product
from shopkart.pricing.money import to_cents


@dataclass
class CartLine:
    product: Product
    quantity: int

    @property
    def line_cents(self) -> int:
        return self.quantity * to_cents(self.product.price)


class Cart:
    def __init__(self) -> None:
        self._lines: dict[str, CartLine] = {}

    def add(self, product: Product, quantity: int = 1) -> None:
        if quantity <= 0:
            raise ValueError("quantity must be positive")
        line = self._lines.get(product.sku)
        if line is None:
            self._lines[product.sku] = CartLine(product, quantity)
        else:
            line.quantity += quantity

    def remove(self, sku: str) -> None:
        self._lines.pop(sku, None)

    def __iter__(self) -> Iterator[CartLine]:
        return iter(self._lines.values())

    def is_empty(self) -> bool:
        return not self._lines

    def item_count(self) -> int:
        return sum(line.quantity for line in self)

    def total(self) -> int:
        """Subtotal of all lines in cents, before discounts, tax and shipping."""
        return sum(line.line_cents for line in self)

    def taxable_cents(self) -> int:
        return sum(line.line_cents for line in self if line.product.taxable)
