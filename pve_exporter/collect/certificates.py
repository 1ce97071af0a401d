"""`GET /nodes/{node}/certificates/info` (slow tier, one call per online node) → certificate expiry.

    pvesh get /nodes/pve1/certificates/info
    # HELP pve_node_certificate_expiry_timestamp_seconds When the node's certificate expires (notafter)
    pve_node_certificate_expiry_timestamp_seconds{cluster="prod",node="pve1",filename="pve-ssl.pem"} 1.8e9

pve-manager `PVE/API2/Certificates.pm` (info) lists `pve-root-ca.pem`, `pve-ssl.pem` and, when
one is uploaded or from ACME, `pveproxy-ssl.pem`; each entry comes from pve-common
`src/PVE/Certificate.pm` get_certificate_info: `filename`, `fingerprint` (SHA-256), `subject`,
`issuer` (one-line DNs), `notbefore`/`notafter` (epoch, absent when the date cannot be parsed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pve_exporter.collect.base import CacheView, Collector, Family, FamilyBuilder, Request, Shared, build_all
from pve_exporter.collect.per_node import payloads_by_node, plan_online
from pve_exporter.pve.values import num, text

SUFFIX = "certificates/info"


def parse_certificates(per_node: list[tuple[str, Any]]) -> list[Family]:
    g = "gauge"
    labels = ("node", "filename")
    expiry = FamilyBuilder(
        "pve_node_certificate_expiry_timestamp_seconds", g,
        "When the node's certificate expires (notafter, Unix time)", labels,
    )  # fmt: skip
    info = FamilyBuilder(
        "pve_node_certificate_info", g, "Certificate of the node (1), with its subject, issuer and SHA-256",
        (*labels, "subject", "issuer", "fingerprint"),
    )  # fmt: skip
    for node, certs in per_node:
        if not isinstance(certs, list):
            continue
        for c in certs:
            name = text(c.get("filename")) if isinstance(c, Mapping) else None
            if not name:
                continue
            key = (node, name)
            expiry.add(key, num(c.get("notafter")))
            info.add(
                (*key, text(c.get("subject")) or "", text(c.get("issuer")) or "", text(c.get("fingerprint")) or ""),
                1.0,
            )
    return build_all((expiry, info))


def _plan(shared: Shared, cache: CacheView) -> list[Request]:
    return plan_online(shared, SUFFIX)


def _parse(shared: Shared, payloads: Mapping[str, Any]) -> list[Family]:
    return parse_certificates(payloads_by_node(payloads, SUFFIX))


COLLECTOR = Collector("certificates", "slow", _plan, _parse)
