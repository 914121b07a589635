"""Masking of personal data and redaction of credentials found in keys and values.

Pure. A profile says which key fields and value parts are personal (an IP address,
an e-mail address) or credentials (a session id that is a bearer token); every
domain answer passes them through here before they reach the model. A short hash is
kept beside a redacted credential so two answers can be correlated without either
showing it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

_EMAIL = re.compile(r"^([^@\s]{1,64})@([^@\s]+)$")


def fingerprint(value: str | bytes) -> str:
    """A short, stable, one-way tag: the same secret always gives the same tag."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return "sha256:" + hashlib.sha256(data).hexdigest()[:12]


def redact_credential(value: str) -> str:
    """A bearer token or session id: never shown whole. Its first four characters
    (to tell two apart at a glance) and its fingerprint stay."""
    shown = value[:4] if len(value) >= 16 else ""
    return f"{shown}…[{len(value)} chars, {fingerprint(value)}]"


def mask_personal(value: str) -> str:
    """An IP address keeps its network part, an e-mail its domain, anything else its
    first two characters."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        if address.version == 4:
            return ".".join([*value.split(".")[:2], "x", "x"])
        return str(ipaddress.ip_network(f"{address}/48", strict=False).network_address) + "x"
    email = _EMAIL.match(value)
    if email:
        return f"{email.group(1)[:1]}***@{email.group(2)}"
    return value[:2] + "***" if len(value) > 2 else "***"
