"""Stock levels with reservations for in-flight orders."""

from dataclasses import dataclass

from shopkart.catalog.products import Catalog
from shopkart.pricing import money


class OutOfStockError(Exception):
    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(f"{sku}: requested {requested}, only {available} available")
        self.sku = sku
        self.requested = requested
        self.available = available


@dataclass
class StockLevel:
    sku: str
    on_hand: int = 0
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


class Inventory:
    def __init__(self) -> None:
        self._levels: dict[str, StockLevel] = {}

    def _level(self, sku: str) -> StockLevel:
        return self._levels.setdefault(sku, StockLevel(sku))

    def receive(self, sku: str, quantity: int) -> None:
        if quantity <= 0:
            raise ValueError("quantity received must be positive")
        self._level(sku).on_hand += quantity

    def available(self, sku: str) -> int:
        return self._level(sku).available

    def reserve(self, sku: str, quantity: int) -> None:
        level = self._level(sku)
        if quantity > level.available:
            raise OutOfStockError(sku, quantity, level.available)
        level.reserved += quantity

    def release(self, sku: str, quantity: int) -> None:
        level = self._level(sku)
        level.reserved = max(level.reserved - quantity, 0)

    def valuation_cents(self, catalog: Catalog) -> int:
        """Retail value of everything on hand, in cents."""
        return sum(
            level.on_hand * money.to_cents(catalog.get(level.sku).price)
            for level in self._levels.values()
            if level.sku in catalog
        )
