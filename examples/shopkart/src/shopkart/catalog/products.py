"""Products and the catalog that indexes them by SKU."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from shopkart.pricing.money import to_cents


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: Decimal
    taxable: bool = True

    def __post_init__(self) -> None:
        if self.price < 0:
            raise ValueError(f"{self.sku}: price cannot be negative")

    @property
    def price_cents(self) -> int:
        return to_cents(self.price)


class Catalog:
    """An in-memory product catalog keyed by SKU."""

    def __init__(self, products: Iterable[Product] = ()) -> None:
        self._products: dict[str, Product] = {}
        for product in products:
            self.add(product)

    def add(self, product: Product) -> None:
        if product.sku in self._products:
            raise ValueError(f"duplicate SKU {product.sku!r}")
        self._products[product.sku] = product

    def get(self, sku: str) -> Product:
        try:
            return self._products[sku]
        except KeyError:
            raise KeyError(f"unknown SKU {sku!r}") from None

    def __contains__(self, sku: object) -> bool:
        return sku in self._products

    def __iter__(self) -> Iterator[Product]:
        return iter(self._products.values())

    def __len__(self) -> int:
        return len(self._products)

    def search(self, text: str) -> list[Product]:
        needle = text.casefold()
        return [p for p in self if needle in p.name.casefold()]

    def cheapest(self) -> Product:
        return min(self, key=lambda p: p.price_cents)
