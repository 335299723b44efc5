from decimal import Decimal

import pytest

from shopkart.catalog.inventory import Inventory, OutOfStockError
from shopkart.catalog.products import Product
from shopkart.orders.cart import Cart
from shopkart.orders.checkout import EmptyCartError, checkout
from shopkart.orders.receipts import Receipt
from shopkart.pricing.discounts import PercentOff
from shopkart.pricing.money import to_cents
from shopkart.pricing.tax import NO_TAX, rate_for

MUG = Product("MUG-01", "Enamel Mug", Decimal("12.50"))
BOOK = Product("BOOK-01", "Field Guide", Decimal("24.00"), taxable=False)


@pytest.fixture
def inventory() -> Inventory:
    stock = Inventory()
    stock.receive(MUG.sku, 10)
    stock.receive(BOOK.sku, 1)
    return stock


def test_cart_merges_lines_and_totals() -> None:
    cart = Cart()
    cart.add(MUG, 2)
    cart.add(MUG)
    cart.add(BOOK)
    assert cart.item_count() == 4
    assert cart.total() == 3 * to_cents(amount=MUG.price) + 2400
    assert cart.taxable_cents() == 3750
    cart.remove(BOOK.sku)
    assert cart.total() == 3750


def test_checkout_builds_receipt_and_reserves_stock(inventory: Inventory) -> None:
    cart = Cart()
    cart.add(MUG, 2)
    receipt = checkout(cart, inventory, rate_for("TX"), order_id="A-1")
    assert receipt.subtotal_cents == 2500
    assert receipt.tax_cents == 206  # 8.25% of 25.00 = 2.0625
    assert receipt.shipping_cents == to_cents(Decimal("4.99"))
    assert receipt.total() == 2500 + 206 + 499
    assert inventory.available(MUG.sku) == 8


def test_checkout_discount_and_free_shipping(inventory: Inventory) -> None:
    cart = Cart()
    cart.add(MUG, 4)
    cart.add(BOOK)
    code = PercentOff("TEN", Decimal("10"))
    receipt = checkout(cart, inventory, NO_TAX, order_id="A-2", discount=code)
    assert receipt.discount_cents == 740
    assert receipt.shipping_cents == 0
    assert receipt.total() == 7400 - 740


def test_checkout_rolls_back_when_out_of_stock(inventory: Inventory) -> None:
    cart = Cart()
    cart.add(MUG, 3)
    cart.add(BOOK, 2)
    with pytest.raises(OutOfStockError):
        checkout(cart, inventory, NO_TAX, order_id="A-3")
    assert inventory.available(MUG.sku) == 10
    with pytest.raises(EmptyCartError):
        checkout(Cart(), inventory, NO_TAX, order_id="A-4")


def test_receipt_total_render_and_refunds() -> None:
    receipt = Receipt("A-5", (), subtotal_cents=1000, discount_cents=100, tax_cents=50)
    assert receipt.total() == 950
    assert "Total" in receipt.render() and "9.50 USD" in receipt.render()
    assert receipt.refund_cents(Decimal("9.50")) == 950
    with pytest.raises(ValueError):
        receipt.refund_cents(Decimal("9.51"))
