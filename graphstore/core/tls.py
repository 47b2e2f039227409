"""Mutual TLS for graphstore's TCP connections, and the warning for exposed listeners.

``TLSConfig`` holds a process's certificate, its private key and the cluster's CA, and
the two SSL contexts made from them: every server requires a client certificate and
every client presents one, each verified against the cluster CA (TLS 1.2 or newer). The
cluster-token handshake still runs inside TLS, so a peer needs both a certificate from
the CA and the token.

Host names. By default a peer's certificate must be signed by the cluster CA, and the
host name it was issued for is not compared with the address connected to: the CA is the
cluster's own, and holding a certificate from it is what makes a process a member
(Dask's default too). Certificates are then free to be per host, per cluster or per role.
``tls_check_hostname`` (off by default) also requires a server's certificate to name
the host a client connects to (a DNS name or IP address in its subjectAltName), for a CA
that signs certificates for other services as well.

Also here: ``explain_handshake_failure`` turns OpenSSL's reason codes into sentences
naming the certificate at fault, and ``exposure_warning`` says what it means to listen on
a non-loopback address without TLS.
"""
from __future__ import annotations

import ipaddress
import os
import ssl

from graphstore.exceptions import TLSConfigError

#: Setting names (``init()`` keywords, ``Config`` fields); ``GRAPHSTORE_<NAME>`` in the
#: environment, ``--tls-cert`` etc. on the command line.
SETTINGS = ("tls_cert", "tls_key", "tls_ca")
_FILE_KIND = {"tls_cert": "certificate", "tls_key": "private key",
              "tls_ca": "CA certificate"}
_HOW_TO_SET = ("--tls-cert/--tls-key/--tls-ca, init(tls_cert=, tls_key=, tls_ca=), or "
               "GRAPHSTORE_TLS_CERT/GRAPHSTORE_TLS_KEY/GRAPHSTORE_TLS_CA")


def _no_password() -> bytes:
    raise TLSConfigError("encrypted key")


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or str(exc)


class TLSConfig:
    """A process's TLS identity and the SSL contexts its servers and clients use."""

    def __init__(self, cert: str, key: str, ca: str, check_hostname: bool = False):
        paths = {}
        for name, path in zip(SETTINGS, (cert, key, ca)):
            path = os.path.abspath(os.path.expanduser(str(path)))
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise TLSConfigError(
                    f"cannot read the TLS {_FILE_KIND[name]} file {path} ({name}): "
                    f"{exc.strerror or exc}") from None
            paths[name] = path
        self.cert, self.key, self.ca = paths["tls_cert"], paths["tls_key"], paths["tls_ca"]
        self.check_hostname = bool(check_hostname)
        #: For ``TCPServer(ssl_options=...)``: requires and verifies client certificates.
        self.server_context = self._context(ssl.Purpose.CLIENT_AUTH)
        #: For ``TCPClient().connect(ssl_options=...)``: verifies the server, shows ours.
        self.client_context = self._context(ssl.Purpose.SERVER_AUTH)

    def _context(self, purpose: ssl.Purpose) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH
                                 else ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_verify_locations(cafile=self.ca)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TLSConfigError(
                f"the TLS CA file {self.ca} (tls_ca) holds no usable PEM certificate: "
                f"{_reason(exc)}") from None
        try:
            context.load_cert_chain(self.cert, self.key, password=_no_password)
        except TLSConfigError:
            raise TLSConfigError(
                f"the TLS private key {self.key} (tls_key) is encrypted: graphstore needs "
                f"an unencrypted key file (protect it with file permissions, mode 0600)"
            ) from None
        except (ssl.SSLError, OSError) as exc:
            reason = _reason(exc)
            if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
                raise TLSConfigError(
                    f"the TLS private key {self.key} (tls_key) does not belong to the "
                    f"certificate {self.cert} (tls_cert)") from None
            raise TLSConfigError(
                f"cannot use the TLS certificate {self.cert} (tls_cert) with the key "
                f"{self.key} (tls_key): {reason}; both must be PEM files") from None
        context.verify_mode = ssl.CERT_REQUIRED
        if purpose is ssl.Purpose.SERVER_AUTH:
            context.check_hostname = self.check_hostname
        return context

    def settings(self) -> dict:
        """The settings that make this configuration, as ``init()`` keywords."""
        return {"tls_cert": self.cert, "tls_key": self.key, "tls_ca": self.ca,
                "tls_check_hostname": self.check_hostname}

    def environment(self) -> dict:
        """The same, as ``GRAPHSTORE_*`` variables for a child process."""
        return {"GRAPHSTORE_TLS_CERT": self.cert, "GRAPHSTORE_TLS_KEY": self.key,
                "GRAPHSTORE_TLS_CA": self.ca,
                "GRAPHSTORE_TLS_CHECK_HOSTNAME": "1" if self.check_hostname else "0"}

    def __repr__(self) -> str:
        return (f"TLSConfig(cert={self.cert!r}, key={self.key!r}, ca={self.ca!r}, "
                f"check_hostname={self.check_hostname})")


def tls_from_settings(cert: str | None, key: str | None, ca: str | None,
                      check_hostname: bool = False) -> TLSConfig | None:
    """A ``TLSConfig`` when all three files are given, None when none is; an error that
    names what is missing when only some are."""
    given = [name for name, value in zip(SETTINGS, (cert, key, ca)) if value]
    if not given:
        return None
    if len(given) < len(SETTINGS):
        missing = [name for name in SETTINGS if name not in given]
        raise TLSConfigError(
            f"TLS is half configured: {' and '.join(given)} "
            f"{'is' if len(given) == 1 else 'are'} set but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not. Mutual TLS needs all three: "
            f"this process's certificate, its private key and the cluster's CA "
            f"({_HOW_TO_SET})")
    return TLSConfig(cert, key, ca, check_hostname)


def tls_from_config(config) -> TLSConfig | None:
    """The TLS configuration a ``Config`` describes (None: TLS is off)."""
    return tls_from_settings(config.tls_cert, config.tls_key, config.tls_ca,
                             config.tls_check_hostname)


# -- explaining failures ----------------------------------------------------------------

#: OpenSSL alert reasons a client receives when the server refuses its certificate.
_REFUSED = {
    "TLSV1_ALERT_UNKNOWN_CA": "it is not signed by the CA the server trusts (another "
                              "cluster's CA?)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "it has expired (or is not valid yet: check the "
                                       "clocks)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "none was presented, and the server requires one",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the server requires a client certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server found it bad",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the server could not verify it",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "the server does not accept its type or usage "
                                           "(it needs the clientAuth extended key usage)",
    "TLSV1_ALERT_DECRYPT_ERROR": "the server could not verify its signature",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "it was revoked",
}
#: Reasons meaning the other side does not speak TLS at all.
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
            "UNKNOWN_PROTOCOL", "HTTP_REQUEST", "UNEXPECTED_EOF_WHILE_READING")


def explain_handshake_failure(exc: BaseException, address: str,
                              tls: TLSConfig) -> str:
    """A client's view of a failed TLS handshake with ``address``, in plain words."""
    reason = str(getattr(exc, "reason", "") or "")
    if isinstance(exc, ssl.SSLCertVerificationError) or reason == "CERTIFICATE_VERIFY_FAILED":
        detail = getattr(exc, "verify_message", "") or str(exc)
        if "mismatch" in detail or "match" in detail:
            why = (f"it is not issued for the host in the address ({detail}); "
                   f"tls_check_hostname is on")
        elif "expired" in detail:
            why = "it has expired"
        elif "not yet valid" in detail:
            why = "it is not valid yet (check the clocks)"
        elif "issuer" in detail or "self-signed" in detail or "self signed" in detail:
            why = f"it is not signed by the cluster CA {tls.ca} ({detail})"
        else:
            why = detail
        return (f"TLS handshake with {address} failed: this process refused the server's "
                f"certificate: {why}")
    if reason in _REFUSED:
        return (f"TLS handshake with {address} failed: the server refused this process's "
                f"certificate {tls.cert}: {_REFUSED[reason]}")
    if reason.startswith("SSLV3_ALERT") or reason.startswith("TLSV1"):
        return (f"TLS handshake with {address} failed: the server refused this process's "
                f"certificate {tls.cert} ({reason.lower().replace('_', ' ')})")
    if any(marker in reason for marker in _NOT_TLS) or isinstance(exc, ssl.SSLEOFError):
        return not_tls_message(address, reason or type(exc).__name__)
    return f"TLS handshake with {address} failed: {exc}"


def not_tls_message(address: str, detail: str) -> str:
    """A TLS client's error for a server that answered in plain text."""
    return (f"TLS handshake with {address} failed: the server does not speak TLS "
            f"({detail}); is the cluster running without TLS? Then drop tls_cert, tls_key "
            f"and tls_ca here, or restart it with them")


# -- where servers listen ---------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """Whether a bound address (or ``localhost``) is only reachable from this machine."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def exposure_warning(what: str, host: str, port: int, tls: TLSConfig | None) -> str | None:
    """The warning to log when ``what`` is bound to a non-loopback address without TLS,
    else None."""
    if tls is not None or is_loopback(host):
        return None
    shown = f"[{host}]" if ":" in host else host
    return (f"{what} listens on {shown}:{port}, which is not a loopback address, without "
            f"TLS: task code, arguments and objects cross the network in clear text and "
            f"only the cluster token keeps strangers out. Use --tls-cert/--tls-key/--tls-ca "
            f"(docs/security.md), or bind 127.0.0.1 and reach it through an SSH tunnel or "
            f"a private network")


def tls_from_spec(tls: dict | None) -> "TLSConfig | None":
    """The TLS settings a worker hands the processes it starts (``None``: plain TCP)."""
    if not tls:
        return None
    return TLSConfig(tls["tls_cert"], tls["tls_key"], tls["tls_ca"], tls["tls_check_hostname"])
