"""Regional sales-tax rates."""

from dataclasses import dataclass
from decimal import Decimal

from shopkart.pricing import money


@dataclass(frozen=True)
class TaxRate:
    """A sales-tax rate expressed as a fraction, e.g. ``Decimal("0.0825")``."""

    region: str
    rate: Decimal

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise ValueError(f"tax rate cannot be negative: {self.rate}")

    def tax_cents(self, taxable_cents: int) -> int:
        return money.to_cents(money.from_cents(taxable_cents) * self.rate)


NO_TAX = TaxRate("none", Decimal("0"))

RATES: dict[str, TaxRate] = {
    "OR": TaxRate("OR", Decimal("0")),
    "TX": TaxRate("TX", Decimal("0.0825")),
    "NY": TaxRate("NY", Decimal("0.08875")),
    "CA": TaxRate("CA", Decimal("0.0725")),
}


def rate_for(region: str) -> TaxRate:
    """Look up the tax rate for a two-letter region code."""
    try:
        return RATES[region.upper()]
    except KeyError:
        raise LookupError(f"no tax rate configured for region {region!r}") from None
