from decimal import Decimal

import pytest

from shopkart.catalog.inventory import Inventory, OutOfStockError
from shopkart.catalog.products import Catalog, Product
from shopkart.pricing.money import to_cents


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(
        [
            Product("MUG-01", "Enamel Mug", Decimal("12.50")),
            Product("TEE-01", "Logo T-Shirt", Decimal("19.99")),
            Product("BOOK-01", "Field Guide to Mugs", Decimal("24.00"), taxable=False),
        ]
    )


def test_catalog_lookup_and_duplicates(catalog: Catalog) -> None:
    assert len(catalog) == 3
    assert "MUG-01" in catalog
    assert catalog.get("TEE-01").price_cents == to_cents(Decimal("19.99"))
    with pytest.raises(ValueError):
        catalog.add(Product("MUG-01", "Another Mug", Decimal("1")))
    with pytest.raises(KeyError):
        catalog.get("NOPE")


def test_search_is_case_insensitive(catalog: Catalog) -> None:
    names = sorted(p.name for p in catalog.search("MUG"))
    assert names == ["Enamel Mug", "Field Guide to Mugs"]
    assert catalog.cheapest().sku == "MUG-01"


def test_reserve_and_release_stock() -> None:
    inventory = Inventory()
    inventory.receive("MUG-01", 5)
    inventory.reserve("MUG-01", 3)
    assert inventory.available("MUG-01") == 2
    with pytest.raises(OutOfStockError) as excinfo:
        inventory.reserve("MUG-01", 3)
    assert excinfo.value.available == 2
    inventory.release("MUG-01", 3)
    assert inventory.available("MUG-01") == 5


def test_inventory_valuation(catalog: Catalog) -> None:
    inventory = Inventory()
    inventory.receive("MUG-01", 4)
    inventory.receive("TEE-01", 2)
    inventory.receive("GHOST-99", 7)  # not in the catalog: ignored
    assert inventory.valuation_cents(catalog) == 4 * 1250 + 2 * 1999
