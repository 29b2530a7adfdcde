"""The Stripe and LemonSqueezy adapters' webhook parsing: signatures, the injected clock, every
event kind, and hostile input (only PaymentError subclasses, whatever a request holds)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.payments.lemonsqueezy import LemonSqueezyProvider
from billing.payments.provider import (
    BadSignature,
    Ignored,
    MalformedEvent,
    Paid,
    PaymentError,
    PaymentProvider,
    Reversed,
    StaleEvent,
)
from billing.payments.stripe import StripeProvider
from tests.fakes import lemonsqueezy_api, stripe_api
from tests.fakes.lemonsqueezy_api import FakeLemonSqueezy
from tests.fakes.stripe_api import FakeStripe

NOW = 1_764_556_800  # 2025-12-01T03:00:00Z, the injected clock


@cache  # parsing needs no I/O: one of each for the module (building one loads a CA bundle)
def stripe_provider() -> StripeProvider:
    return StripeProvider(api_key="sk_test_x", webhook_secret=stripe_api.WEBHOOK_SECRET, tolerance_s=300)


@cache
def ls_provider() -> LemonSqueezyProvider:
    return LemonSqueezyProvider(api_key="k", store_id="1", webhook_secret=lemonsqueezy_api.WEBHOOK_SECRET)


def opened_stripe_session(fake: FakeStripe, price: str = "price_starter") -> str:
    session = fake._session({"metadata": {"account_id": "7", "package_id": "starter", "price_id": price}}, price)
    fake.sessions[session["id"]]["_payment_metadata"] = session["metadata"]
    return str(session["id"])


def stripe_headers(body: bytes, timestamp: int = NOW, secret: str = stripe_api.WEBHOOK_SECRET) -> dict[str, str]:
    return {"stripe-signature": stripe_api.sign(body, secret, timestamp)}


def test_stripe_paid_session_is_a_purchase_keyed_by_its_session() -> None:
    fake = FakeStripe(url="http://fake")
    session = opened_stripe_session(fake)
    for event_type in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        body = fake.completed_event(session, event_type=event_type)
        notice = stripe_provider().parse_webhook(stripe_headers(body), body, NOW)
        assert notice == Paid(
            event_id=session,
            reference="pi_" + session.removeprefix("cs_test_"),
            account_id=7,
            package_id="starter",
            price_id="price_starter",
            amount_minor=900,
            currency="USD",
        )


def test_stripe_unpaid_session_unknown_event_and_foreign_refund_are_ignored() -> None:
    fake = FakeStripe(url="http://fake")
    session = opened_stripe_session(fake)
    unpaid = json.loads(fake.completed_event(session))
    unpaid["data"]["object"]["payment_status"] = "unpaid"
    foreign = json.loads(fake.refund_event(session, 900))
    foreign["data"]["object"]["metadata"] = {}
    won = json.loads(fake.dispute_lost_event(session))
    won["data"]["object"]["status"] = "won"
    not_ours = json.loads(fake.completed_event(session))
    not_ours["data"]["object"]["metadata"] = {"order": "a t-shirt"}
    for event in (unpaid, foreign, won, not_ours, json.loads(stripe_api.other_event())):
        body = json.dumps(event).encode()
        assert isinstance(stripe_provider().parse_webhook(stripe_headers(body), body, NOW), Ignored)


def test_stripe_refund_and_lost_dispute_are_reversals() -> None:
    fake = FakeStripe(url="http://fake")
    session = opened_stripe_session(fake)
    intent = "pi_" + session.removeprefix("cs_test_")
    refund = fake.refund_event(session, 300)
    dispute = fake.dispute_lost_event(session)
    refunded = stripe_provider().parse_webhook(stripe_headers(refund), refund, NOW)
    lost = stripe_provider().parse_webhook(stripe_headers(dispute), dispute, NOW)
    assert isinstance(refunded, Reversed) and (refunded.reference, refunded.refunded_total_minor) == (intent, 300)
    assert isinstance(lost, Reversed) and (lost.reference, lost.refunded_total_minor, lost.reason) == (
        intent,
        None,
        "chargeback",
    )


def test_stripe_timestamp_is_held_to_the_injected_clock() -> None:
    body = stripe_api.other_event()
    provider = stripe_provider()
    assert isinstance(provider.parse_webhook(stripe_headers(body, NOW - 300), body, NOW), Ignored)
    with pytest.raises(StaleEvent):
        provider.parse_webhook(stripe_headers(body, NOW - 301), body, NOW)
    # The same signature is fresh again for a clock that agrees with it.
    assert isinstance(provider.parse_webhook(stripe_headers(body, NOW - 301), body, NOW - 1), Ignored)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"stripe-signature": ""},
        {"stripe-signature": "t=1764556800"},
        {"stripe-signature": "v1=abc"},
        {"stripe-signature": "t=x,v1=abc"},
        {"stripe-signature": "t=1764556800,v1=ü"},
        {"stripe-signature": "t=1764556800,v1=" + "a" * 5000},
    ],
)
def test_stripe_unreadable_signatures_are_bad_signatures(headers: dict[str, str]) -> None:
    with pytest.raises(BadSignature):
        stripe_provider().parse_webhook(headers, stripe_api.other_event(), NOW)


def test_stripe_body_changed_after_signing_and_wrong_secret_are_refused() -> None:
    body = stripe_api.other_event()
    with pytest.raises(BadSignature):
        stripe_provider().parse_webhook(stripe_headers(body), body + b" ", NOW)
    with pytest.raises(BadSignature):
        stripe_provider().parse_webhook(stripe_headers(body, secret="whsec_other"), body, NOW)
    unconfigured = StripeProvider(api_key="sk", webhook_secret="")
    with pytest.raises(BadSignature):
        unconfigured.parse_webhook(stripe_headers(body), body, NOW)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda e: e["data"]["object"]["metadata"].pop("account_id"),
        lambda e: e["data"]["object"]["metadata"].update(account_id="0"),
        lambda e: e["data"]["object"]["metadata"].update(account_id="-1"),
        lambda e: e["data"]["object"]["metadata"].update(account_id="99999999999999999999"),
        lambda e: e["data"]["object"].update(amount_total=2**64),
        lambda e: e["data"]["object"].update(amount_total=-5),
        lambda e: e["data"]["object"].update(currency="dollars"),
        lambda e: e["data"]["object"].update(id="cs_\u0000"),
        lambda e: e.update(id="x" * 300),
        lambda e: e.update(data=[]),
    ],
)
def test_stripe_signed_but_malformed_events_are_refused(mutate: Any) -> None:
    fake = FakeStripe(url="http://fake")
    event = json.loads(fake.completed_event(opened_stripe_session(fake)))
    mutate(event)
    body = json.dumps(event).encode()
    with pytest.raises(MalformedEvent):
        stripe_provider().parse_webhook(stripe_headers(body), body, NOW)


def ls_order(status: str = "paid") -> tuple[FakeLemonSqueezy, str, bytes]:
    fake = FakeLemonSqueezy(url="http://fake")
    checkout = fake._checkout(
        {"attributes": {"checkout_data": {"custom": {"account_id": "7", "package_id": "starter"}}}}, "85474"
    )
    checkout_id = str(checkout["data"]["id"])
    _order, body = fake.order_created(checkout_id, status=status)
    return fake, checkout_id, body


def ls_headers(body: bytes) -> dict[str, str]:
    return {"x-signature": lemonsqueezy_api.sign(body)}


def test_lemonsqueezy_paid_order_refunds_and_other_events() -> None:
    fake, checkout_id, body = ls_order()
    provider = ls_provider()
    assert provider.parse_webhook(ls_headers(body), body, NOW) == Paid(
        event_id="order_created:1001",
        reference="1001",
        account_id=7,
        package_id="starter",
        price_id="85474",
        amount_minor=900,
        currency="USD",
    )
    refund = fake.order_refunded(checkout_id, 450)
    assert provider.parse_webhook(ls_headers(refund), refund, NOW) == Reversed(
        event_id="order_refunded:1001:450", reference="1001", refunded_total_minor=450
    )
    _fake, _checkout, pending = ls_order("pending")
    other = lemonsqueezy_api.other_event()
    for ignored in (pending, other):
        assert isinstance(provider.parse_webhook(ls_headers(ignored), ignored, NOW), Ignored)


def test_lemonsqueezy_signature_is_checked_in_constant_time_over_the_raw_body() -> None:
    _fake, _checkout, body = ls_order()
    provider = ls_provider()
    for headers, sent in [
        ({}, body),
        ({"x-signature": "ü" * 64}, body),
        ({"x-signature": lemonsqueezy_api.sign(body, "other")}, body),
        (ls_headers(body), body.replace(b'"total": 900', b'"total": 9')),
        ({"x-signature": lemonsqueezy_api.sign(body).upper()}, body),
    ]:
        with pytest.raises(BadSignature):
            provider.parse_webhook(headers, sent, NOW)


def _sign_for(provider: PaymentProvider, body: bytes) -> dict[str, str]:
    if isinstance(provider, StripeProvider):
        return stripe_headers(body)
    return ls_headers(body)


hostile_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    which=st.sampled_from(["stripe", "lemonsqueezy"]),
    body=st.one_of(
        hostile_json.map(lambda value: json.dumps(value).encode()),
        st.binary(max_size=200),
        st.just(b"[" * 100_000),
        st.just(
            b'{"meta": {"event_name": "order_created", "custom_data": {"package_id": "x"}}, "data": ' + b"[" * 50_000
        ),
    ),
    signed=st.booleans(),
)
def test_payment_providers_answer_any_body_with_a_payment_error_or_a_notice(
    which: str, body: bytes, signed: bool
) -> None:
    provider: PaymentProvider = stripe_provider() if which == "stripe" else ls_provider()
    headers = _sign_for(provider, body) if signed else {"stripe-signature": "t=1,v1=00", "x-signature": "00"}
    try:
        notice = provider.parse_webhook(headers, body, NOW)
    except PaymentError:
        return
    assert isinstance(notice, Paid | Reversed | Ignored)


def test_payment_startup_warnings_name_missing_secrets_and_unsellable_setups() -> None:
    from gateway.config_check import startup_warnings
    from gateway.settings import load_settings

    settings = load_settings(
        env={},
        payments={
            "checkout_provider": "stripe",
            "stripe": {"api_key_env": "STRIPE_SECRET_KEY", "webhook_secret_env": "STRIPE_WEBHOOK_SECRET"},
            "lemonsqueezy": {"webhook_secret": "set"},
        },
    )
    warned = "\n".join(startup_warnings(settings, {}))
    assert "$STRIPE_WEBHOOK_SECRET is not set" in warned and "$STRIPE_SECRET_KEY is not set" in warned
    assert "no credit package has a provider_price_ids.stripe" in warned
    assert "lemonsqueezy" not in warned  # its secret is there, and it opens no checkouts
    quiet = startup_warnings(settings, {"STRIPE_SECRET_KEY": "sk", "STRIPE_WEBHOOK_SECRET": "whsec"})
    about_payments = [warning for warning in quiet if "payments" in warning]
    assert len(about_payments) == 1 and "no credit package" in about_payments[0]  # only that remains


GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "payments"


def test_payment_golden_bodies_in_the_providers_documented_shape_parse() -> None:
    """Events as the providers' references document them (tests/golden/payments/), not as our
    fakes make them: the adapters read what a real delivery holds."""
    completed = (GOLDEN / "stripe_checkout_session_completed.json").read_bytes()
    refunded = (GOLDEN / "stripe_charge_refunded.json").read_bytes()
    order = (GOLDEN / "lemonsqueezy_order_created.json").read_bytes()
    stripe = stripe_provider()
    assert stripe.parse_webhook(stripe_headers(completed), completed, NOW) == Paid(
        event_id="cs_test_a1YS1URlnyQCN5fUUduORoQ7Pw41PJqDWkIVQCpJPqkfIhd6tVY8XB1OLY",
        reference="pi_3QbZzjLkdIwHu7ix1kOqTL8H",
        account_id=42,
        package_id="starter",
        price_id="price_1QbZxKLkdIwHu7ixStarter",
        amount_minor=900,
        currency="USD",
    )
    assert stripe.parse_webhook(stripe_headers(refunded), refunded, NOW) == Reversed(
        event_id="evt_3QbZzjLkdIwHu7ix1H1d2Vq9", reference="pi_3QbZzjLkdIwHu7ix1kOqTL8H", refunded_total_minor=300
    )
    assert ls_provider().parse_webhook(ls_headers(order), order, NOW) == Paid(
        event_id="order_created:4321",
        reference="4321",
        account_id=42,
        package_id="starter",
        price_id="85474",
        amount_minor=900,
        currency="USD",
    )
