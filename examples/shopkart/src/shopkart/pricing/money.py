"""Money helpers built on :class:`decimal.Decimal`.

Amounts are carried around as integer cents once they enter the order
pipeline, so that sums never accumulate rounding error.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def quantize(amount: Decimal) -> Decimal:
    """Round an amount to whole cents, half away from zero."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def to_cents(amount: Decimal) -> int:
    """Convert a Decimal currency amount to integer cents (half-up)."""
    return int(quantize(amount) * 100)


def from_cents(cents: int) -> Decimal:
    """Convert integer cents back to a two-place Decimal amount."""
    return (Decimal(cents) / 100).quantize(CENT)


def format_cents(cents: int, currency: str = "USD") -> str:
    """Render cents as e.g. ``1,234.56 USD``."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    return f"{sign}{whole:,}.{frac:02d} {currency}"


@dataclass(frozen=True)
class Price:
    """A currency amount tagged with its currency code."""

    amount: Decimal
    currency: str = "USD"

    @property
    def cents(self) -> int:
        return to_cents(self.amount)

    def __str__(self) -> str:
        return format_cents(self.cents, self.currency)
