"""zonda.tls without sockets: the server context a config builds, the start-up errors bad TLS options get, and
the ASGI ``tls`` extension read from real handshakes over in-memory BIOs. client_cert_name is checked against
``cryptography``'s RFC 4514 rendering of certificates built for the purpose."""

from __future__ import annotations

import datetime
import ssl
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import zonda.tls
from tlsutil import KEY_PASSWORD, TLSFiles, make_tls_files
from zonda import Config
from zonda.errors import ConfigError
from zonda.tls import (
    alpn_protocols,
    create_ssl_context,
    describe_tls,
    server_cert_pem,
    subject_rfc4514,
    tls_extension,
)

# IANA ids (RFC 8446 B.4, RFC 5289, RFC 7905) of suites an ECDSA server certificate can negotiate
IANA = {
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "ECDHE-ECDSA-AES128-GCM-SHA256": 0xC02B,
    "ECDHE-ECDSA-AES256-GCM-SHA384": 0xC02C,
    "ECDHE-ECDSA-CHACHA20-POLY1305": 0xCCA9,
}


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


def context(**options: Any) -> ssl.SSLContext:
    made = create_ssl_context(Config(app="x:y", **options))
    assert made is not None
    return made


def handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A full handshake between two SSLObjects over memory BIOs; raises the server's SSLError if it fails."""
    server_in, server_out, client_in, client_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    client = client_context.wrap_bio(client_in, client_out, server_hostname="localhost")
    done: set[str] = set()
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if name not in done:
                try:
                    side.do_handshake()
                    done.add(name)
                except ssl.SSLWantReadError:
                    pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if len(done) == 2:
            return server, client
    raise AssertionError("the handshake did not finish")


# --------------------------------------------------------------------------- the context


@pytest.mark.parametrize(
    ("http", "protocols"), [("auto", ["h2", "http/1.1"]), ("1", ["http/1.1"]), ("2", ["h2"])]
)
def test_alpn_protocols(http: str, protocols: list[str]) -> None:
    assert alpn_protocols(Config(http=http)) == protocols


def test_no_certificate_means_no_tls() -> None:
    config = Config(app="x:y")
    assert create_ssl_context(config) is None


def test_context_defaults(files: TLSFiles) -> None:
    made = context(**files.server_options())
    assert made.minimum_version == ssl.TLSVersion.TLSv1_2
    assert made.verify_mode == ssl.CERT_NONE
    assert made.options & ssl.OP_NO_RENEGOTIATION
    config = Config(app="x:y", timeout_tls_handshake=3, **files.server_options())
    assert describe_tls(config) == "TLS 1.2 and up, ALPN h2, http/1.1, client certificates not asked for"


@pytest.mark.parametrize(
    ("reqs", "mode"),
    [
        ("none", ssl.CERT_NONE),
        ("optional", ssl.CERT_OPTIONAL),
        ("required", ssl.CERT_REQUIRED),
        ("2", ssl.CERT_REQUIRED),
    ],
)
def test_client_certificate_modes(files: TLSFiles, reqs: str, mode: ssl.VerifyMode) -> None:
    assert context(**files.mtls_options(reqs)).verify_mode == mode


@pytest.mark.parametrize(
    ("http", "offered", "selected"),
    [
        ("auto", ["h2", "http/1.1"], "h2"),
        ("auto", ["http/1.1"], "http/1.1"),
        ("1", ["h2", "http/1.1"], "http/1.1"),
        ("2", ["http/1.1"], None),  # no overlap: the handshake goes on without ALPN (RFC 7301 allows either)
    ],
)
def test_alpn_selection(files: TLSFiles, http: str, offered: list[str], selected: str | None) -> None:
    server, client = handshake(
        context(http=http, **files.server_options()), files.client_context(alpn=offered)
    )
    assert server.selected_alpn_protocol() == selected
    assert client.selected_alpn_protocol() == selected


def test_min_version_13_refuses_a_tls12_client(files: TLSFiles) -> None:
    server_context = context(ssl_min_version="1.3", **files.server_options())
    assert server_context.minimum_version == ssl.TLSVersion.TLSv1_3
    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL"):
        handshake(server_context, files.client_context(maximum_version=ssl.TLSVersion.TLSv1_2))


def test_encrypted_key_with_its_password(files: TLSFiles) -> None:
    made = context(
        ssl_certfile=str(files.cert), ssl_keyfile=str(files.encrypted_key), ssl_keyfile_password=KEY_PASSWORD
    )
    handshake(made, files.client_context())


def test_certificate_and_key_in_one_file(files: TLSFiles, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_text(files.cert.read_text() + files.key.read_text())
    handshake(context(ssl_certfile=str(combined)), files.client_context())


def test_server_cert_pem_is_the_first_certificate_of_a_chain(files: TLSFiles, tmp_path: Path) -> None:
    chain = tmp_path / "chain.pem"
    chain.write_text(files.cert.read_text() + files.ca_pem.read_text())
    assert server_cert_pem(str(chain)) == files.cert.read_text()


# --------------------------------------------------------------------------- start-up errors


def startup_error(**options: Any) -> str:
    with pytest.raises(ConfigError) as info:
        create_ssl_context(Config(app="x:y", **options))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_errors_name_the_option(files: TLSFiles, tmp_path: Path) -> None:
    cert, key = str(files.cert), str(files.key)
    missing = str(tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    other_key = tmp_path / "other.key"
    other_key.write_text(files.client_key.read_text())
    cases: list[tuple[dict[str, Any], str]] = [
        ({"ssl_keyfile": key}, "ssl_keyfile: needs ssl_certfile"),
        ({"ssl_cert_reqs": "required"}, "ssl_cert_reqs: needs ssl_certfile"),
        ({"ssl_min_version": "1.3"}, "ssl_min_version: needs ssl_certfile"),
        ({"ssl_certfile": missing, "ssl_keyfile": key}, f"ssl_certfile: cannot read {missing}: No such file"),
        ({"ssl_certfile": cert, "ssl_keyfile": missing}, f"ssl_keyfile: cannot read {missing}: No such file"),
        ({"ssl_certfile": str(junk), "ssl_keyfile": key}, "holds no PEM certificate"),
        ({"ssl_certfile": cert}, f"ssl_keyfile: needed, as {cert} holds no private key"),
        ({"ssl_certfile": cert, "ssl_keyfile": str(junk)}, "holds no PEM private key"),
        ({"ssl_certfile": cert, "ssl_keyfile": str(other_key)}, "does not match the certificate"),
        (
            {"ssl_certfile": cert, "ssl_keyfile": str(files.encrypted_key)},
            "ssl_keyfile_password: needed, as the key in",
        ),
        (
            {"ssl_certfile": cert, "ssl_keyfile": str(files.encrypted_key), "ssl_keyfile_password": "nope"},
            "ssl_keyfile_password: wrong password",
        ),
        ({"ssl_certfile": cert, "ssl_keyfile": key, "ssl_ciphers": "NOPE"}, "ssl_ciphers: 'NOPE' selects no"),
        ({"ssl_certfile": cert, "ssl_keyfile": key, "ssl_cert_reqs": "optional"}, "needs ssl_ca_certs"),
        ({"ssl_certfile": cert, "ssl_keyfile": key, "ssl_ca_certs": missing}, "ssl_ca_certs: cannot read"),
        ({"ssl_certfile": cert, "ssl_keyfile": key, "ssl_ca_certs": str(junk)}, "ssl_ca_certs: "),
        ({"ssl_certfile": cert, "ssl_keyfile": key, "proxy_protocol": "v1"}, "proxy_protocol: cannot be"),
        ({"ssl_certfile": cert, "ssl_keyfile": key, "timeout_tls_handshake": 0}, "timeout_tls_handshake:"),
    ]
    for options, expected in cases:
        assert expected in startup_error(**options), options


# --------------------------------------------------------------------------- the tls extension


def test_extension_without_a_client_certificate(files: TLSFiles) -> None:
    server, client = handshake(context(**files.server_options()), files.client_context())
    pem = server_cert_pem(str(files.cert))
    tls = tls_extension(server, pem)
    assert tls == {
        "server_cert": pem,
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": 0x0304,
        "cipher_suite": IANA[client.cipher()[0]],  # type: ignore[index]
    }
    assert pem == files.cert.read_text()


def test_extension_over_tls12_with_a_chosen_cipher(files: TLSFiles) -> None:
    server_context = context(ssl_ciphers="ECDHE-ECDSA-AES128-GCM-SHA256", **files.server_options())
    server, _ = handshake(server_context, files.client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    tls = tls_extension(server, None)
    assert tls["tls_version"] == 0x0303
    assert tls["cipher_suite"] == 0xC02B
    assert tls["server_cert"] is None


@pytest.mark.parametrize("reqs", ["optional", "required"])
def test_extension_with_a_client_certificate(files: TLSFiles, reqs: str) -> None:
    server, _ = handshake(context(**files.mtls_options(reqs)), files.client_context(client_cert=True))
    tls = tls_extension(server, None)
    assert tls["client_cert_chain"] == files.client_chain_sent()
    assert tls["client_cert_name"] == files.client_name
    assert tls["client_cert_name"].startswith("CN=zonda test client,")
    assert "O=Zonda QA\\, Inc." in tls["client_cert_name"]
    assert tls["client_cert_error"] is None


def test_the_chain_is_what_the_client_sent(files: TLSFiles, tmp_path: Path) -> None:
    # A client certificate issued by an intermediate CA; the client sends both, the server trusts the root.
    intermediate = files.ca.create_child_ca()
    client_cert = intermediate.issue_cert("chained@example.org", common_name="chained client")
    client_context = files.client_context()
    client_cert.configure_cert(client_context)
    server, _ = handshake(context(**files.mtls_options("required")), client_context)
    leaf, sent_intermediate = (pem.bytes().decode() for pem in client_cert.cert_chain_pems)
    chain = tls_extension(server, None)["client_cert_chain"]
    if sys.version_info >= (3, 13):
        assert chain == [leaf, sent_intermediate]  # not the root: the client did not send it
    else:
        assert chain == [leaf]  # the standard library gives nothing more before 3.13
    assert tls_extension(server, None)["client_cert_name"].startswith("CN=chained client,")


def test_optional_mode_without_a_client_certificate(files: TLSFiles) -> None:
    server, _ = handshake(context(**files.mtls_options("optional")), files.client_context())
    tls = tls_extension(server, None)
    assert (tls["client_cert_chain"], tls["client_cert_name"], tls["client_cert_error"]) == ([], None, None)


def test_a_context_zonda_did_not_build(files: TLSFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        zonda.tls, "_CIPHER_IDS", {}
    )  # as if no context had been built yet: learned on first use
    foreign = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    foreign.load_cert_chain(files.cert, files.key)
    foreign.set_ciphers("ECDHE-ECDSA-CHACHA20-POLY1305")
    server, _ = handshake(foreign, files.client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert tls_extension(server, None)["cipher_suite"] == 0xCCA9


# --------------------------------------------------------------------------- RFC 4514 names

_KEY = ec.generate_private_key(ec.SECP256R1())


def certificate_der(subject: x509.Name) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(_KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    return builder.sign(_KEY, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


A = x509.NameAttribute


def rdn(*attributes: x509.NameAttribute) -> x509.RelativeDistinguishedName:
    return x509.RelativeDistinguishedName(list(attributes))


@pytest.mark.parametrize(
    "name",
    [
        x509.Name([]),
        x509.Name([A(NameOID.COUNTRY_NAME, "DE"), A(NameOID.ORGANIZATION_NAME, 'A, "B"+<c>;\\d=e')]),
        x509.Name([A(NameOID.COMMON_NAME, " #leading and trailing ")]),
        x509.Name(
            [A(NameOID.COMMON_NAME, "a\x00b"), A(NameOID.COMMON_NAME, " "), A(NameOID.COMMON_NAME, "#")]
        ),
        x509.Name(
            [
                rdn(A(NameOID.COMMON_NAME, "x"), A(NameOID.USER_ID, "u1")),
                rdn(A(NameOID.DOMAIN_COMPONENT, "org")),
            ]
        ),
        x509.Name(
            [
                A(NameOID.STREET_ADDRESS, "Main St 1"),
                A(NameOID.LOCALITY_NAME, "Köln"),
                A(NameOID.STATE_OR_PROVINCE_NAME, "NRW"),
                A(NameOID.ORGANIZATIONAL_UNIT_NAME, "ou"),
                A(NameOID.COMMON_NAME, "Jürgen ✓"),
            ]
        ),
        x509.Name([A(NameOID.COMMON_NAME, "BMP ✓", _type=x509.name._ASN1Type.BMPString)]),
        x509.Name([A(NameOID.COMMON_NAME, "universal", _type=x509.name._ASN1Type.UniversalString)]),
        x509.Name([A(NameOID.ORGANIZATION_NAME, "x" * 300)]),  # a long-form DER length
    ],
)
def test_subject_matches_cryptography(name: x509.Name) -> None:
    assert subject_rfc4514(certificate_der(name)) == name.rfc4514_string()


def test_types_without_a_short_name_are_dotted_oids_with_the_ber_value() -> None:
    # RFC 4514 section 2.4 (cryptography writes the string instead)
    name = x509.Name([A(NameOID.EMAIL_ADDRESS, "a@b.c"), A(NameOID.COMMON_NAME, "me")])
    assert subject_rfc4514(certificate_der(name)) == "CN=me,1.2.840.113549.1.9.1=#16056140622e63"


def test_a_malformed_certificate_is_a_value_error() -> None:
    der = certificate_der(x509.Name([A(NameOID.COMMON_NAME, "me")]))
    with pytest.raises((ValueError, IndexError)):
        subject_rfc4514(der[:60])
    with pytest.raises(ValueError):
        subject_rfc4514(b"\x04\x00")
