from __future__ import annotations

import pytest

from mita_redis_mcp.redact import fingerprint, mask_personal, redact_credential


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("203.0.113.7", "203.0.x.x"),
        ("2001:db8:85a3::8a2e:370:7334", "2001:db8:85a3::x"),
        ("dana@example.com", "d***@example.com"),
        ("Dana Smith", "Da***"),
        ("ab", "***"),
    ],
)
def test_mask_personal_hides_the_person(value: str, masked: str) -> None:
    assert mask_personal(value) == masked


def test_redact_credential_never_shows_a_bearer_token_whole() -> None:
    token = "Zm9vYmFyLXNlc3Npb24tdG9rZW4tNDM2Nzg5MDEyMzQ1"
    shown = redact_credential(token)
    assert token not in shown
    assert shown.startswith("Zm9v…")
    assert fingerprint(token) in shown


def test_redact_credential_shows_nothing_of_a_short_secret() -> None:
    assert "hunt" not in redact_credential("hunter2")


def test_fingerprint_correlates_without_revealing() -> None:
    assert fingerprint("a") == fingerprint(b"a") != fingerprint("b")
