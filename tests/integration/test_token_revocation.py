"""Who may revoke a ``bt-`` token: the account's managers any of its tokens, a restricted key
only the tokens it minted itself."""

from __future__ import annotations

from tests.fakes.gateway_fixtures import FAKE_MODEL, Gateway
from tests.integration.test_keys_api import api, chat, mint, new_key


def test_token_revocation_by_a_restricted_key_is_limited_to_its_own_tokens(gateway: Gateway) -> None:
    narrow = new_key(gateway, allowed_models=[FAKE_MODEL])
    sibling = new_key(gateway)
    siblings_token = mint(gateway, sibling["id"])
    own = api(gateway, "POST", "/api/keys/ephemeral/", key=narrow["key"], json={"key_id": narrow["id"]})
    own_token = own.json()["data"]["token"]

    refused = api(gateway, "POST", "/api/keys/ephemeral/revoke/", key=narrow["key"], json={"token": siblings_token})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_role"
    assert chat(gateway, siblings_token).status_code == 200  # still alive

    assert (
        api(gateway, "POST", "/api/keys/ephemeral/revoke/", key=narrow["key"], json={"token": own_token}).status_code
        == 204
    )
    assert chat(gateway, own_token).status_code == 401
    # The unrestricted key manages the whole account, so it may still revoke the sibling's token.
    assert api(gateway, "POST", "/api/keys/ephemeral/revoke/", json={"token": siblings_token}).status_code == 204
    assert chat(gateway, siblings_token).status_code == 401
