"""The 15 templates against envmanager.md §6's table, written out here independently of the JSON."""

from __future__ import annotations

import pytest

from functions.models import HttpMethod, InjectAs
from functions.templates import get_template, list_templates
from functions.validation import AllowedHosts, check_headers, check_mappings_shape, target_url_problem

JSON = {"Content-Type": "application/json"}
JSON_ACCEPT = {"Content-Type": "application/json", "Accept": "application/json"}
BEARER = "Bearer ${value}"

# sort order: (slug, name, category, target URL, static headers, (header key, template, variable hint))
TABLE = [
    ("brevo", "Brevo", "email", "https://api.brevo.com/v3/smtp/email", JSON_ACCEPT, ("api-key", "", "BREVO_API_KEY")),
    (
        "stripe",
        "Stripe",
        "payment",
        "https://api.stripe.com/v1/charges",
        {"Content-Type": "application/x-www-form-urlencoded"},
        ("Authorization", BEARER, "STRIPE_SECRET_KEY"),
    ),
    (
        "openai",
        "OpenAI",
        "ai",
        "https://api.openai.com/v1/chat/completions",
        JSON,
        ("Authorization", BEARER, "OPENAI_API_KEY"),
    ),
    (
        "sendgrid",
        "SendGrid",
        "email",
        "https://api.sendgrid.com/v3/mail/send",
        JSON,
        ("Authorization", BEARER, "SENDGRID_API_KEY"),
    ),
    ("resend", "Resend", "email", "https://api.resend.com/emails", JSON, ("Authorization", BEARER, "RESEND_API_KEY")),
    (
        "postmark",
        "Postmark",
        "email",
        "https://api.postmarkapp.com/email",
        JSON_ACCEPT,
        ("X-Postmark-Server-Token", "", "POSTMARK_SERVER_TOKEN"),
    ),
    (
        "anthropic",
        "Anthropic Claude",
        "ai",
        "https://api.anthropic.com/v1/messages",
        {"Content-Type": "application/json", "anthropic-version": "2023-06-01"},
        ("x-api-key", "", "ANTHROPIC_API_KEY"),
    ),
    (
        "mistral",
        "Mistral",
        "ai",
        "https://api.mistral.ai/v1/chat/completions",
        JSON,
        ("Authorization", BEARER, "MISTRAL_API_KEY"),
    ),
    (
        "groq",
        "Groq",
        "ai",
        "https://api.groq.com/openai/v1/chat/completions",
        JSON,
        ("Authorization", BEARER, "GROQ_API_KEY"),
    ),
    (
        "paddle",
        "Paddle",
        "payment",
        "https://api.paddle.com/transactions",
        JSON,
        ("Authorization", BEARER, "PADDLE_API_KEY"),
    ),
    (
        "lemonsqueezy",
        "LemonSqueezy",
        "payment",
        "https://api.lemonsqueezy.com/v1/checkouts",
        {"Content-Type": "application/vnd.api+json", "Accept": "application/vnd.api+json"},
        ("Authorization", BEARER, "LEMONSQUEEZY_API_KEY"),
    ),
    (
        "mollie",
        "Mollie",
        "payment",
        "https://api.mollie.com/v2/payments",
        JSON,
        ("Authorization", BEARER, "MOLLIE_API_KEY"),
    ),
    (
        "intercom",
        "Intercom",
        "support",
        "https://api.intercom.io/messages",
        {"Content-Type": "application/json", "Intercom-Version": "2.15"},
        ("Authorization", BEARER, "INTERCOM_ACCESS_TOKEN"),
    ),
    (
        "hubspot",
        "HubSpot",
        "crm",
        "https://api.hubapi.com/crm/v3/objects/contacts",
        JSON,
        ("Authorization", BEARER, "HUBSPOT_ACCESS_TOKEN"),
    ),
    (
        "onesignal",
        "OneSignal",
        "notifications",
        "https://api.onesignal.com/notifications",
        JSON,
        ("Authorization", "Key ${value}", "ONESIGNAL_REST_API_KEY"),
    ),
]


def test_function_templates_match_envmanager_table_in_sort_order() -> None:
    templates = list_templates()
    assert [t.slug for t in templates] == [row[0] for row in TABLE]
    assert [t.sort_order for t in templates] == list(range(15))
    for template, (slug, name, category, url, headers, (key, text, hint)) in zip(templates, TABLE, strict=True):
        assert (template.slug, template.name, template.category) == (slug, name, category)
        assert template.target_url == url, slug
        assert template.headers == headers, slug
        assert template.method is HttpMethod.POST, slug
        assert template.pass_through_body is True and template.body_template is None, slug
        assert len(template.secret_hints) == 1, slug
        (only,) = template.secret_hints
        assert (only.inject_as, only.key, only.template, only.variable_name_hint) == (InjectAs.HEADER, key, text, hint)
        assert template.description and template.icon, slug


@pytest.mark.parametrize("slug", [row[0] for row in TABLE])
def test_function_templates_pass_the_field_rules(slug: str) -> None:
    template = get_template(slug)
    assert template is not None
    assert target_url_problem(template.target_url, AllowedHosts()) is None
    assert check_headers(template.headers) == template.headers
    check_mappings_shape([(1, hint.inject_as, hint.key, hint.template) for hint in template.secret_hints])


def test_function_templates_unknown_slug_is_none_and_loading_happens_once() -> None:
    assert get_template("nope") is None
    assert list_templates() is list_templates()
