"""TLS for the listeners: the server's ``SSLContext`` from the config, ALPN, and the ASGI ``tls`` scope extension.

Invariants:
- Everything that can be worked out once is worked out at start-up, in each process (an ``SSLContext`` cannot
  be pickled, so every worker builds its own from the ``Config``): the context, the server certificate's PEM,
  the cipher-name-to-IANA-id table. A bad certificate, key, password or CA file is a ``ConfigError`` with one
  line naming the option, never an OpenSSL "PEM lib" traceback.
- Per connection, ``tls_extension`` asks the ``SSLObject`` for the negotiated version, cipher and the client's
  certificate; a client certificate's subject is parsed (a small DER walk, no third-party x509 library) only
  when there is one.
- The standard library offers no verify callback, so a client certificate that fails verification aborts the
  handshake (also with ``ssl_cert_reqs=optional``): a connection that reaches the app has a verified client
  certificate or none, and ``client_cert_error`` is None unless verification was off.
"""

from __future__ import annotations

import logging
import re
import ssl
from typing import Any

from zonda.config import Config
from zonda.errors import ConfigError

logger = logging.getLogger("zonda.error")

_MIN_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
# SSLObject.version() -> the protocol version number on the wire (RFC 8446 section 4.2.1)
_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
# OpenSSL cipher name -> IANA cipher suite id; filled from each context at start-up (None: not known)
_CIPHER_IDS: dict[str, int | None] = {}

_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.DOTALL)
_PEM_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")

# Python 3.13+: the certificates the client sent, its own first, as the ASGI spec's client_cert_chain asks;
# before that only the client's own is available. (get_verified_chain would add the CA from the server's
# trust store, which the client did not send.)
_sent_chain = getattr(ssl.SSLObject, "get_unverified_chain", None)


def alpn_protocols(config: Config) -> list[str]:
    """The ALPN protocol ids offered, in the server's order of preference (RFC 7301)."""
    if config.http == "1":
        return ["http/1.1"]
    if config.http == "2":
        return ["h2"]
    return ["h2", "http/1.1"]


def create_ssl_context(config: Config) -> ssl.SSLContext | None:
    """The server's context, or None when TLS is off (no ``ssl_certfile``). Raises ConfigError."""
    certfile = config.ssl_certfile
    if certfile is None:
        _check_tls_off(config)
        return None
    if config.timeout_tls_handshake <= 0:
        raise ConfigError("timeout_tls_handshake: must be more than 0 seconds")
    if config.proxy_protocol != "off":
        # The PROXY header comes before the ClientHello, and the TLS layer would take it for a bad handshake.
        raise ConfigError(
            "proxy_protocol: cannot be combined with ssl_certfile (terminate TLS at the proxy, or turn one off)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _MIN_VERSIONS[config.ssl_min_version]
    # Renegotiation is a DoS lever and HTTP/2 forbids it (RFC 9113 section 9.2.1).
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    _load_cert_chain(context, config, certfile)
    if config.ssl_ciphers is not None:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise ConfigError(f"ssl_ciphers: {config.ssl_ciphers!r} selects no cipher") from None
    _set_client_verification(context, config)
    context.set_alpn_protocols(alpn_protocols(config))
    _learn_ciphers(context)
    return context


def describe_tls(config: Config) -> str:
    """One line for the start-up log."""
    clients = {"none": "not asked for", "optional": "verified if sent", "required": "required"}
    return (
        f"TLS {config.ssl_min_version} and up, ALPN {', '.join(alpn_protocols(config))}, "
        f"client certificates {clients[config.ssl_cert_reqs]}"
    )


def server_cert_pem(certfile: str) -> str:
    """The PEM of the certificate the server sends first (its own; a chain file's others are CAs)."""
    text = _read_text("ssl_certfile", certfile)
    match = _PEM_CERT.search(text)
    if match is None:
        raise ConfigError(f"ssl_certfile: {certfile} holds no PEM certificate")
    try:
        der = ssl.PEM_cert_to_DER_cert(match.group(0))
    except ValueError:
        raise ConfigError(f"ssl_certfile: {certfile} holds a malformed PEM certificate") from None
    return ssl.DER_cert_to_PEM_cert(der)  # one canonical layout, the same as client_cert_chain's


def tls_extension(ssl_object: ssl.SSLObject, server_cert_pem: str | None) -> dict[str, Any]:
    """The ASGI ``tls`` connection scope extension (version 0.2) for one handshaken connection."""
    version = ssl_object.version()
    cipher = ssl_object.cipher()
    der = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    name = error = None
    if der is not None:
        ders = _sent_chain(ssl_object) if _sent_chain is not None else [der]
        chain = [ssl.DER_cert_to_PEM_cert(item) for item in ders]
        name = _client_cert_name(der)
        if ssl_object.context.verify_mode == ssl.CERT_NONE:  # not reachable with zonda's own contexts
            error = "client certificate not verified"
    return {
        "server_cert": server_cert_pem,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": error,
        "tls_version": _TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": _cipher_id(ssl_object.context, cipher[0]) if cipher else None,
    }


# --------------------------------------------------------------------------- start-up checks


def _check_tls_off(config: Config) -> None:
    """TLS options without a certificate would silently serve plain HTTP: refuse them."""
    given = [
        name
        for name in ("ssl_keyfile", "ssl_keyfile_password", "ssl_ca_certs", "ssl_ciphers")
        if getattr(config, name) is not None
    ]
    if config.ssl_cert_reqs != "none":
        given.append("ssl_cert_reqs")
    if config.ssl_min_version != "1.2":
        given.append("ssl_min_version")
    if given:
        raise ConfigError(f"{given[0]}: needs ssl_certfile (without it zonda serves plain HTTP)")


def _read_text(option: str, path: str) -> str:
    try:
        with open(path, "rb") as file:
            return file.read().decode("ascii", "replace")
    except OSError as exc:
        raise ConfigError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None


def _load_cert_chain(context: ssl.SSLContext, config: Config, certfile: str) -> None:
    server_cert_pem(certfile)  # readable, and holds a certificate: a clear error before OpenSSL's vague one
    keyfile = config.ssl_keyfile
    if keyfile is None:
        if not _PEM_KEY.search(_read_text("ssl_certfile", certfile)):
            raise ConfigError(f"ssl_keyfile: needed, as {certfile} holds no private key")
    elif not _PEM_KEY.search(_read_text("ssl_keyfile", keyfile)):
        raise ConfigError(f"ssl_keyfile: {keyfile} holds no PEM private key")
    asked = False
    password = config.ssl_keyfile_password

    def give_password() -> str:
        # Without a password, never let OpenSSL prompt on a terminal: a server (and each worker) must not block.
        nonlocal asked
        asked = True
        return password or ""

    try:
        context.load_cert_chain(certfile, keyfile, password=give_password)
    except ssl.SSLError as exc:
        key = keyfile or certfile
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"ssl_keyfile: the key in {key} does not match the certificate") from None
        if asked and password is None:
            raise ConfigError(f"ssl_keyfile_password: needed, as the key in {key} is encrypted") from None
        if asked:
            raise ConfigError(f"ssl_keyfile_password: wrong password for the key in {key}") from None
        raise ConfigError(f"ssl_certfile: cannot load {certfile} with its key: {exc.reason or exc}") from None
    except OSError as exc:  # the file vanished between the checks and the load
        raise ConfigError(f"ssl_certfile: cannot load {certfile}: {exc.strerror or exc}") from None


def _set_client_verification(context: ssl.SSLContext, config: Config) -> None:
    cafile = config.ssl_ca_certs
    if config.ssl_cert_reqs != "none" and cafile is None:
        raise ConfigError(f"ssl_cert_reqs: {config.ssl_cert_reqs} needs ssl_ca_certs to verify clients with")
    if cafile is None:
        return
    _read_text("ssl_ca_certs", cafile)
    try:
        context.load_verify_locations(cafile=cafile)
    except ssl.SSLError:
        raise ConfigError(f"ssl_ca_certs: {cafile} holds no PEM certificate") from None
    if config.ssl_cert_reqs == "none":
        logger.warning("ssl_ca_certs is unused: client certificates are not asked for (ssl_cert_reqs none)")
    context.verify_mode = _CERT_REQS[config.ssl_cert_reqs]


def _learn_ciphers(context: ssl.SSLContext) -> None:
    for cipher in context.get_ciphers():
        # OpenSSL ids are 0x0300XXXX for TLS: the low 16 bits are the IANA two-byte suite (RFC 8446 B.4)
        _CIPHER_IDS[cipher["name"]] = cipher["id"] & 0xFFFF


def _cipher_id(context: ssl.SSLContext, name: str) -> int | None:
    try:
        return _CIPHER_IDS[name]
    except KeyError:
        _learn_ciphers(context)  # a context zonda did not build; learned once, as are names it lacks
        return _CIPHER_IDS.setdefault(name, None)


# --------------------------------------------------------------------------- client_cert_name: RFC 4514

# RFC 4514 section 3: the attribute types with a string name; every other type is its dotted OID.
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
# ASN.1 string types (X.690 universal tags) and how their bytes decode
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x12: "ascii",  # NumericString
    0x13: "ascii",  # PrintableString
    0x14: "latin-1",  # TeletexString, read as Latin-1 as OpenSSL does
    0x16: "ascii",  # IA5String
    0x1A: "ascii",  # VisibleString
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}
_ESCAPED = re.compile(r'["+,;<>\\\x00]')


def _client_cert_name(der: bytes) -> str | None:
    try:
        return subject_rfc4514(der)
    except (ValueError, IndexError):  # OpenSSL accepted it, so this is our parser's limit: leave the name out
        logger.debug("Could not read the subject of a client certificate", exc_info=True)
        return None


def subject_rfc4514(der: bytes) -> str:
    """The subject of a DER certificate as an RFC 4514 string (last RDN first). Raises ValueError."""
    _, start, _ = _item(der, 0, 0x30)  # Certificate
    _, start, end = _item(der, start, 0x30)  # TBSCertificate (RFC 5280 section 4.1)
    fields = []
    while start < end:
        tag, content, stop = _item(der, start)
        fields.append((tag, content, stop))
        start = stop
    if fields and fields[0][0] == 0xA0:  # [0] EXPLICIT version
        fields.pop(0)
    # serialNumber, signature, issuer, validity, subject
    tag, start, end = fields[4]
    if tag != 0x30:
        raise ValueError("subject is not a SEQUENCE")
    rdns = []
    while start < end:  # RDNSequence: SET OF AttributeTypeAndValue
        _, content, stop = _item(der, start, 0x31)
        pairs = []
        while content < stop:
            _, inner, after = _item(der, content, 0x30)
            _, oid_start, oid_end = _item(der, inner, 0x06)
            pairs.append(_attribute(der, _oid(der[oid_start:oid_end]), oid_end))
            content = after
        rdns.append("+".join(pairs))
        start = stop
    return ",".join(reversed(rdns))


def _attribute(der: bytes, oid: str, value_at: int) -> str:
    tag, start, end = _item(der, value_at)
    short = _SHORT_NAMES.get(oid)
    codec = _STRING_CODECS.get(tag)
    if short is not None and codec is not None:
        try:
            return f"{short}={_escape(der[start:end].decode(codec))}"
        except UnicodeDecodeError:
            pass
    # RFC 4514 section 2.4: '#' and the hex of the value's BER encoding
    return f"{short or oid}=#{der[value_at:end].hex()}"


def _escape(value: str) -> str:
    """RFC 4514 section 2.4."""
    escaped = _ESCAPED.sub(lambda m: "\\00" if m.group(0) == "\x00" else "\\" + m.group(0), value)
    if value.startswith(("#", " ")):
        escaped = "\\" + escaped
    if len(value) > 1 and value.endswith(" "):
        escaped = escaped[:-1] + "\\ "
    return escaped


def _item(der: bytes, pos: int, expect: int | None = None) -> tuple[int, int, int]:
    """The DER element at ``pos``: (tag, where its content starts, where it ends). Raises ValueError."""
    tag = der[pos]
    if expect is not None and tag != expect:
        raise ValueError(f"expected tag {expect:#x}, got {tag:#x}")
    if tag & 0x1F == 0x1F:
        raise ValueError("high tag numbers do not occur in a certificate's name")
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise ValueError("not a DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(der):
        raise ValueError("truncated DER")
    return tag, pos, end


def _oid(data: bytes) -> str:
    arcs = []
    value = 0
    for byte in data:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise ValueError("empty OID")
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])
