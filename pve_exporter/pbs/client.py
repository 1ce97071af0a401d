"""The PBS API client: PveClient (failover, typed errors, observer) with PBS's token header and port.

PBS reads `Authorization: PBSAPIToken=<user@realm!name>:<secret>` (a colon where PVE has `=`),
listens on 8007 and wraps answers in the same `{"data": ...}` envelope. A configured
`fingerprint` pins the server certificate (PveClient's `fingerprint`): a mismatch is a
PveCertificateError, never a silent fallback to an unchecked connection.
"""

from __future__ import annotations

from pve_exporter.pve.client import PveClient
from pve_exporter.settings import PBS_PORT


class PbsClient(PveClient):
    DEFAULT_PORT = PBS_PORT

    @staticmethod
    def auth_header(token_id: str, token_secret: str) -> str:
        return f"PBSAPIToken={token_id}:{token_secret}"
