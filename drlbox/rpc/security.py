"""Who may call a drlbox service: a shared bearer token, and TLS when certificates are given.

Local training binds every role to loopback and needs neither. A role listening on any other
address must have a token (the CLI refuses to start without one); health checks stay open so
that Docker and Kubernetes probes need no secret.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass

import grpc
import grpc.aio

from drlbox.rpc.handlers import refusal

AUTH_KEY = "authorization"
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


@dataclass(frozen=True)
class Security:
    """A token and optional TLS material (PEM bytes) for servers and channels."""

    token: str | None = None
    tls_cert: bytes | None = None     # server certificate chain
    tls_key: bytes | None = None      # server private key
    tls_ca: bytes | None = None       # roots a client trusts (None: the system's)
    tls: bool = False                 # clients: use TLS even without a custom CA

    @staticmethod
    def from_files(token: str | None = None, token_file: str | None = None,
                   tls_cert: str | None = None, tls_key: str | None = None,
                   tls_ca: str | None = None, tls: bool = False) -> "Security":
        """Read the token and PEM files named by flags or DRLBOX_* variables.

        Clients use TLS with `tls_ca`, or with the system's CAs when only `tls` is set.
        """
        token = (token or "").strip()          # a token of blanks is no token
        if token_file and not token:
            token = _read(token_file, "token file").decode(errors="replace").strip()
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("TLS needs both a certificate and its key (DRLBOX_TLS_CERT and "
                             "DRLBOX_TLS_KEY); only one was given")
        return Security(token=token or None,
                        tls_cert=_read(tls_cert, "TLS certificate") if tls_cert else None,
                        tls_key=_read(tls_key, "TLS key") if tls_key else None,
                        tls_ca=_read(tls_ca, "TLS CA bundle") if tls_ca else None,
                        tls=bool(tls or tls_ca or tls_cert))

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """TLS credentials for a server, or None for a plain port."""
        if not self.tls_cert:
            return None
        return grpc.ssl_server_credentials([(self.tls_key, self.tls_cert)])

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials for a channel, or None for a plain one."""
        if not (self.tls or self.tls_ca):
            return None
        return grpc.ssl_channel_credentials(root_certificates=self.tls_ca)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ValueError(f"cannot read the {what} {path!r}: {err.strerror}") from None


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuse every call without the right bearer token (health checks excepted), before its
    handler reads anything."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        given = dict(handler_call_details.invocation_metadata or ()).get(AUTH_KEY)
        if given is None:
            return refusal(await continuation(handler_call_details),
                           grpc.StatusCode.UNAUTHENTICATED,
                           "this drlbox service needs a token: pass token=... to the "
                           "client, or set DRLBOX_TOKEN (or DRLBOX_TOKEN_FILE) for a role")
        if not hmac.compare_digest(given.encode(errors="replace"), self._expected):
            return refusal(await continuation(handler_call_details),
                           grpc.StatusCode.UNAUTHENTICATED,
                           "the token is wrong: use the cluster's token (`make token` "
                           "prints the compose cluster's)")
        return await continuation(handler_call_details)
