"""Discount codes that can be applied to an order subtotal."""

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from shopkart.pricing.money import from_cents, to_cents


@dataclass(frozen=True)
class PercentOff:
    """A percentage off the whole subtotal, e.g. ``Decimal("10")`` for 10%."""

    code: str
    percent: Decimal

    def __post_init__(self) -> None:
        if not Decimal(0) < self.percent <= Decimal(100):
            raise ValueError(f"percent must be in (0, 100], got {self.percent}")

    def discount_cents(self, subtotal_cents: int) -> int:
        return to_cents(amount=from_cents(subtotal_cents) * self.percent / 100)


@dataclass(frozen=True)
class FixedOff:
    """A fixed amount off, never more than the subtotal itself."""

    code: str
    amount: Decimal

    def discount_cents(self, subtotal_cents: int) -> int:
        return min(to_cents(self.amount), subtotal_cents)


Discount = PercentOff | FixedOff


def best_discount(discounts: Iterable[Discount], subtotal_cents: int) -> int:
    """Return the largest saving any of ``discounts`` gives on the subtotal."""
    return max((d.discount_cents(subtotal_cents) for d in discounts), default=0)
