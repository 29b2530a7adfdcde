"""The key ring: sealing, opening across rotation, and refusing what it cannot open."""

from __future__ import annotations

import pytest

from functions.crypto import KeyRing, MissingSecretKey, SecretKeyError, UnreadableSecret, new_key_text

_KNOWN = new_key_text()


def test_keyring_seals_with_the_greatest_id_and_opens_older_keys() -> None:
    old = KeyRing.from_texts({"k1": _KNOWN})
    sealed_old = old.seal("sk_live_123", context="variable:1:2:STRIPE")
    both = KeyRing.from_texts({"k1": _KNOWN, "k2": new_key_text()})
    assert both.current == "k2"
    assert both.open(sealed_old, context="variable:1:2:STRIPE") == "sk_live_123"
    assert both.needs_reseal(sealed_old)
    fresh = both.seal("sk_live_123", context="variable:1:2:STRIPE")
    assert both.key_id_of(fresh) == "k2" and not both.needs_reseal(fresh)
    assert "sk_live_123" not in fresh


def test_keyring_opens_only_in_its_own_context() -> None:
    ring = KeyRing.from_texts({"k1": _KNOWN})
    sealed = ring.seal("secret", context="variable:1:2:A")
    with pytest.raises(UnreadableSecret):
        ring.open(sealed, context="variable:2:2:A")  # another tenant's row


def test_keyring_names_the_missing_key_id() -> None:
    sealed = KeyRing.from_texts({"prod-2026": new_key_text()}).seal("x", context="c")
    with pytest.raises(MissingSecretKey) as raised:
        KeyRing.from_texts({"other": new_key_text()}).open(sealed, context="c")
    assert "prod-2026" in str(raised.value)


@pytest.mark.parametrize("text", ["", "not base64!", "c2hvcnQ="])
def test_keyring_refuses_malformed_keys(text: str) -> None:
    with pytest.raises(SecretKeyError):
        KeyRing.from_texts({"k1": text})


def test_keyring_refuses_tampered_ciphertext() -> None:
    ring = KeyRing.from_texts({"k1": _KNOWN})
    sealed = ring.seal("secret", context="c")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(UnreadableSecret):
        ring.open(tampered, context="c")
