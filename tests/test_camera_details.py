"""Reader credentials in a camera event's query read REDACTED; the rest stays byte for byte."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nestmtx_sidecar.hooks.camera_details import READER_SECRETS, redact_query

# Names that are not credentials, values that may hold anything a query can (but no `&`).
plain_names = st.text(st.characters(blacklist_characters="&="), min_size=1, max_size=12).filter(
    lambda name: name.strip().lower() not in READER_SECRETS and "%" not in name)
secret_names = st.sampled_from(sorted(READER_SECRETS)).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.capitalize()]))
values = st.text(st.characters(blacklist_characters="&"), max_size=20)
pairs = st.lists(st.tuples(plain_names | secret_names, values), max_size=6)


def expected(items: list[tuple[str, str]], escape: bool = False) -> tuple[str, str]:
    """(query as MediaMTX passes it, the same with every credential's value REDACTED)."""
    sent = "&".join(f"{name}={value}" for name, value in items)
    shown = "&".join(f"{name}=REDACTED" if name.lower() in READER_SECRETS else
                     f"{name}={value}" for name, value in items)
    if escape:  # MediaMTX since v1.18.1: url.QueryEscape of the whole query
        return quote(sent, safe=""), quote(shown, safe="")
    return sent, shown


@given(items=pairs)
def test_raw_queries_keep_all_but_credential_values(items: list[tuple[str, str]]) -> None:
    sent, shown = expected(items)
    assert redact_query(sent) == shown


@given(items=pairs)
def test_escaped_queries_keep_all_but_credential_values(items: list[tuple[str, str]]
                                                        ) -> None:
    sent, shown = expected(items, escape=True)
    assert redact_query(sent) == shown


@pytest.mark.parametrize(("query", "shown"), [
    ("jwt=eyJhbGciOiJIUzI1NiJ9.e30.sig&view=1", "jwt=REDACTED&view=1"),
    ("PassWord=a=b&Key=", "PassWord=REDACTED&Key=REDACTED"),
    ("token=a%26rest&b=2", "token=REDACTED&b=2"),  # an escaped & inside the value
    ("j%77t=1&x=token", "j%77t=REDACTED&x=token"),  # an escaped name is still the name
    ("jwt%3Dabc%26b%3D1", "jwt%3DREDACTED%26b%3D1"),  # v1.18.1+: the whole query escaped
    ("secret%3Da%2526b%26c%3D1", "secret%3DREDACTED%26c%3D1"),
    ("password", "password"),
    ("", ""),
])
def test_known_queries(query: str, shown: str) -> None:
    assert redact_query(query) == shown
