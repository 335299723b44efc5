"""Immutable receipts produced by checkout."""

from dataclasses import dataclass
from decimal import Decimal

from shopkart.pricing.money import format_cents, to_cents


@dataclass(frozen=True)
class ReceiptLine:
    sku: str
    name: str
    quantity: int
    line_cents: int


@dataclass(frozen=True)
class Receipt:
    order_id: str
    lines: tuple[ReceiptLine, ...]
    subtotal_cents: int
    discount_cents: int = 0
    tax_cents: int = 0
    shipping_cents: int = 0

    def total(self) -> int:
        """Amount charged in cents, after discount, tax and shipping."""
        return (
            self.subtotal_cents
            - self.discount_cents
            + self.tax_cents
            + self.shipping_cents
        )

    def refund_cents(self, amount: Decimal) -> int:
        """Validate a refund request against what was charged."""
        cents = to_cents(amount)
        if not 0 < cents <= self.total():
            raise ValueError(f"cannot refund {amount} on order {self.order_id}")
        return cents

    def render(self, width: int = 40) -> str:
        def row(label: str, cents: int) -> str:
            amount = format_cents(cents)
            return f"{label:<{width - len(amount)}}{amount}"

        rows = [f"Order {self.order_id}"]
        for ln in self.lines:
            rows.append(row(f"  {ln.quantity} x {ln.name}", ln.line_cents))
        rows.append(row("  Subtotal", self.subtotal_cents))
        if self.discount_cents:
            rows.append(row("  Discount", -self.discount_cents))
        rows.append(row("  Tax", self.tax_cents))
        rows.append(row("  Shipping", self.shipping_cents))
        rows.append(row("  Total", self.total()))
        return "\n".join(rows)
