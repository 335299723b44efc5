from decimal import Decimal

import pytest

from shopkart.pricing import money
from shopkart.pricing.discounts import FixedOff, PercentOff, best_discount
from shopkart.pricing.money import Price, to_cents
from shopkart.pricing.tax import rate_for


@pytest.mark.parametrize(
    ("amount", "cents"),
    [
        (Decimal("19.99"), 1999),
        (Decimal("1.005"), 101),
        (Decimal("0.004"), 0),
        (Decimal("-2.50"), -250),
        (Decimal("1234"), 123400),
    ],
)
def test_to_cents_rounds_half_up(amount: Decimal, cents: int) -> None:
    assert to_cents(amount) == cents


def test_from_cents_round_trips_and_formats() -> None:
    assert money.to_cents(money.from_cents(4321)) == 4321
    assert money.format_cents(-123456) == "-1,234.56 USD"
    assert str(Price(Decimal("7.5"), "EUR")) == "7.50 EUR"


def test_percent_off_rounds_to_nearest_cent() -> None:
    ten_percent = PercentOff("TEN", Decimal("10"))
    assert ten_percent.discount_cents(2599) == 260
    with pytest.raises(ValueError):
        PercentOff("BAD", Decimal("150"))


def test_fixed_off_never_exceeds_subtotal() -> None:
    five_off = FixedOff("FIVE", Decimal("5.00"))
    assert five_off.discount_cents(2000) == to_cents(amount=Decimal("5"))
    assert five_off.discount_cents(300) == 300


def test_best_discount_picks_largest_saving() -> None:
    codes = [PercentOff("TEN", Decimal("10")), FixedOff("FIVE", Decimal("5"))]
    assert best_discount(codes, 3000) == 500
    assert best_discount(codes, 8000) == 800
    assert best_discount([], 8000) == 0


def test_tax_rates() -> None:
    assert rate_for("tx").tax_cents(1000) == 83
    assert rate_for("OR").tax_cents(1000) == 0
    with pytest.raises(LookupError):
        rate_for("ZZ")
