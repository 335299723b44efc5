"""Turn a cart into a receipt, reserving stock along the way."""

from decimal import Decimal

from shopkart.catalog.inventory import Inventory
from shopkart.orders.cart import Cart
from shopkart.orders.receipts import Receipt, ReceiptLine
from shopkart.pricing import money
from shopkart.pricing.discounts import Discount
from shopkart.pricing.money import to_cents
from shopkart.pricing.tax import TaxRate

FREE_SHIPPING_FROM = to_cents(amount=Decimal("50.00"))
FLAT_SHIPPING = money.to_cents(Decimal("4.99"))


class EmptyCartError(Exception):
    pass


def shipping_for(subtotal_cents: int) -> int:
    return 0 if subtotal_cents >= FREE_SHIPPING_FROM else FLAT_SHIPPING


def checkout(
    cart: Cart,
    inventory: Inventory,
    tax_rate: TaxRate,
    order_id: str,
    discount: Discount | None = None,
) -> Receipt:
    if cart.is_empty():
        raise EmptyCartError("cannot check out an empty cart")

    reserved: list[tuple[str, int]] = []
    try:
        for line in cart:
            inventory.reserve(line.product.sku, line.quantity)
            reserved.append((line.product.sku, line.quantity))
    except Exception:
        for sku, quantity in reserved:
            inventory.release(sku, quantity)
        raise

    subtotal = cart.total()
    saving = discount.discount_cents(subtotal) if discount else 0
    taxable = max(cart.taxable_cents() - saving, 0)
    lines = tuple(
        ReceiptLine(line.product.sku, line.product.name, line.quantity, line.line_cents)
        for line in cart
    )
    return Receipt(
        order_id=order_id,
        lines=lines,
        subtotal_cents=subtotal,
        discount_cents=saving,
        tax_cents=tax_rate.tax_cents(taxable),
        shipping_cents=shipping_for(subtotal - saving),
    )
