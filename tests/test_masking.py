"""One rule for finding an email address (``masking.EMAIL_PATTERN``), shared by display
masking, privacy scrubbing, what Scanova is sent, and the sandbox standing in for Scanova."""

from __future__ import annotations

import pytest

from django_conversions.contrib.sandbox import rules
from django_conversions.conversion import Conversion
from django_conversions.masking import MASK, contains_email, mask_text
from django_conversions.privacy import redact_personal
from django_conversions.providers.base import SiteConfig
from django_conversions.providers.scanova import ScanovaProvider
from django_conversions.testing import SCAN_SESSION, outbound

# (address, its domain): ASCII and internationalised addresses alike.
ADDRESSES = [
    ("buyer@example.com", "example.com"),
    ("Ana.Pop+spring@Mail.Example.CO.UK", "Mail.Example.CO.UK"),
    ("josé@exämple.de", "exämple.de"),
    ("用户@例子.中国", "例子.中国"),
    ("анна@пример.рф", "пример.рф"),
    ("info@пример.xn--p1ai", "пример.xn--p1ai"),
]
NOT_ADDRESSES = ["sam@localhost", "version 1.2@3.45", "@handle", "a@b.c", "no at sign"]


@pytest.mark.parametrize(("address", "domain"), ADDRESSES)
def test_an_address_in_any_script_is_found_and_masked_in_text(address: str, domain: str) -> None:
    # given
    text = f"call me, or write to <{address}>."
    # when
    masked = mask_text(text)
    # then: the local part is hidden, the domain kept (it helps tell typos apart)
    assert contains_email(text)
    assert address not in masked
    assert masked == f"call me, or write to <{address[0]}{MASK}@{domain}>."


@pytest.mark.parametrize("text", NOT_ADDRESSES)
def test_text_without_an_address_is_left_alone(text: str) -> None:
    assert not contains_email(text)
    assert mask_text(text) == text


@pytest.mark.parametrize(("address", "domain"), ADDRESSES)
def test_privacy_scrubbing_removes_the_same_addresses(address: str, domain: str) -> None:
    assert redact_personal(f"refused: {address}") == "refused: [email]"


@pytest.mark.parametrize(("address", "domain"), ADDRESSES)
def test_scanova_is_never_sent_an_address_and_the_sandbox_would_refuse_one(
    address: str, domain: str
) -> None:
    # given: custom properties holding the address in a value and as a key
    properties = {"note": f"from {address}", address: True, "channel": "flyer"}
    conversion = Conversion(event_name="purchase", scan_session_id=SCAN_SESSION)
    provider = ScanovaProvider(SiteConfig(provider_site_id="site_abc123"))
    # when
    body = provider.build_body(outbound(conversion.narrowed(properties=properties)))
    # then: only the clean property goes out, and the sandbox (Scanova's rules) finds the
    # address in what was left out by the same rule
    assert body["properties"] == {"channel": "flyer"}
    refused = rules.scanova_event_errors({**body, "properties": properties}, ["body"])
    assert {tuple(error["loc"]) for error in refused} == {
        ("body", "properties", "note"),
        ("body", "properties", address),
    }
    assert rules.scanova_event_errors(body, ["body"]) == []
