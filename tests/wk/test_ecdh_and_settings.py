"""The node's ECDH-ES format, the settings, and the stand-in's own guarantees."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap
from lxml import etree
from stdnum.pl import pesel as pesel_number
from structlog.testing import capture_logs

from ueoz_migration.adapters.wk import WkConfigError, WkSettings
from ueoz_migration.adapters.wk.ecdh import DecryptionError, decrypt_assertion, encrypt_assertion
from ueoz_migration.adapters.wk.xmlsig import NS
from ueoz_migration.config import ConfigError
from ueoz_migration.standin import (
    DEMO_IDENTITIES,
    StandinRefused,
    StandinSettings,
    create_standin_app,
)

from .conftest import ANNA, SP_URL

ASSERTION = b'<saml2:Assertion xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion" ID="a"/>'


@pytest.mark.parametrize("bits", [256, 192, 128])
def test_an_encrypted_assertion_decrypts_whatever_the_content_key_size(bits):
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = encrypt_assertion(
        ASSERTION, key.public_key(), party_u="node.test", party_v="sp", content_key_bits=bits
    )

    assert decrypt_assertion(encrypted, key) == ASSERTION


def test_the_key_derivation_is_concat_kdf_over_the_whole_length_prefixed_other_info():
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = encrypt_assertion(ASSERTION, key.public_key(), party_u="node.test", party_v="sp")
    params = encrypted.find(".//xenc11:ConcatKDFParams", NS)
    originator = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(),
        base64.b64decode(encrypted.findtext(".//dsig11:PublicKey", namespaces=NS)),
    )
    wrapped = base64.b64decode(
        encrypted.findtext(".//xenc:EncryptedKey/xenc:CipherData/xenc:CipherValue", namespaces=NS)
    )

    # ConcatKDF by hand (NIST SP 800-56A): one SHA-256 round, counter 1, Z, OtherInfo.
    other_info = b"".join(
        bytes.fromhex(params.get(n)) for n in ("AlgorithmID", "PartyUInfo", "PartyVInfo")
    )
    z = key.exchange(ec.ECDH(), originator)
    kek = hashlib.sha256((1).to_bytes(4, "big") + z + other_info).digest()

    assert other_info[:4] == len(b"http://www.w3.org/2001/04/xmlenc#kw-aes256").to_bytes(4, "big")
    assert len(aes_key_unwrap(kek, wrapped)) == 32


def test_a_ciphertext_changed_in_transit_does_not_decrypt():
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = encrypt_assertion(ASSERTION, key.public_key(), party_u="n", party_v="sp")
    value = encrypted.find("xenc:EncryptedData/xenc:CipherData/xenc:CipherValue", NS)
    raw = bytearray(base64.b64decode(value.text))
    raw[-1] ^= 1
    value.text = base64.b64encode(bytes(raw)).decode()

    with pytest.raises(DecryptionError):
        decrypt_assertion(encrypted, key)


def test_an_assertion_for_another_key_does_not_decrypt():
    encrypted = encrypt_assertion(
        ASSERTION, ec.generate_private_key(ec.SECP256R1()).public_key(), party_u="n", party_v="sp"
    )

    with pytest.raises(DecryptionError):
        decrypt_assertion(encrypted, ec.generate_private_key(ec.SECP256R1()))


# -- settings --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ({}, "WK_NODE_URL"),
        ({"WK_NODE_URL": "https://login.gov.pl"}, "WK_NODE_CERT"),
    ],
)
def test_production_without_a_setting_refuses_to_start_naming_it(tmp_path, present, missing):
    with pytest.raises(WkConfigError, match=missing):
        WkSettings.from_env(present, base_url=SP_URL, instance_dir=tmp_path, production=True)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"WK_NODE_URL": "http://login.gov.pl"}, "WK_NODE_URL"),
        (
            {
                "WK_NODE_URL": "http://login.gov.pl",
                **{
                    name: "https://login.gov.pl/x"
                    for name in ("WK_SSO_URL", "WK_ARTIFACT_RESOLUTION_URL", "WK_LOGOUT_URL")
                },
            },
            "WK_NODE_URL",
        ),
        (
            {
                "WK_NODE_URL": "https://login.gov.pl",
                "WK_ARTIFACT_RESOLUTION_URL": "http://login.gov.pl/login-services/idpArtifactResolutionService",
            },
            "WK_ARTIFACT_RESOLUTION_URL",
        ),
    ],
)
def test_production_refuses_a_node_address_in_clear_naming_the_setting(tmp_path, environ, named):
    with pytest.raises(WkConfigError, match=f"^{named} must be an https:// address in production$"):
        WkSettings.from_env(environ, base_url=SP_URL, instance_dir=tmp_path, production=True)


def test_production_without_the_service_keys_names_the_missing_variable(tmp_path, sp_settings):
    cert = tmp_path / "node.pem"
    cert.write_bytes(sp_settings.node_cert_pem)
    environ = {"WK_NODE_URL": "https://login.gov.pl", "WK_NODE_CERT": str(cert)}

    with pytest.raises(WkConfigError, match="WK_SP_SIGNING_KEY"):
        WkSettings.from_env(environ, base_url=SP_URL, instance_dir=tmp_path, production=True)


def test_production_takes_configured_keys_and_the_node_defaults(tmp_path, sp_settings):
    files = {}
    for name, pem in {
        "WK_NODE_CERT": sp_settings.node_cert_pem,
        "WK_SP_SIGNING_KEY": sp_settings.sp_signing.key_pem,
        "WK_SP_SIGNING_CERT": sp_settings.sp_signing.cert_pem,
        "WK_SP_ENCRYPTION_KEY": sp_settings.sp_encryption.key_pem,
        "WK_SP_ENCRYPTION_CERT": sp_settings.sp_encryption.cert_pem,
    }.items():
        (tmp_path / name).write_bytes(pem)
        files[name] = str(tmp_path / name)

    settings = WkSettings.from_env(
        {"WK_NODE_URL": "https://int.login.gov.pl", "WK_LOA": "high", **files},
        base_url=SP_URL,
        instance_dir=tmp_path / "unused",
        production=True,
    )

    assert settings.node_entity_id == "int.login.gov.pl"
    assert settings.sso_url == "https://int.login.gov.pl/login/SingleSignOnService"
    assert settings.loa_uri == "http://eidas.europa.eu/LoA/high"
    assert settings.tls_verify is True
    assert not (tmp_path / "unused").exists()


def test_development_keys_are_made_once_and_reused(tmp_path):
    with capture_logs() as made:
        first = WkSettings.from_env({}, base_url=SP_URL, instance_dir=tmp_path, production=False)
    with capture_logs() as again:
        second = WkSettings.from_env({}, base_url=SP_URL, instance_dir=tmp_path, production=False)

    # The operator is warned once for each pair made, with where it lies.
    assert sorted((e["event"], e["log_level"], e["name"], e["path"]) for e in made) == [
        ("wk.development_key_pair_generated", "warning", name, str(tmp_path / "wk" / f"{name}.pem"))
        for name in ("sp-encryption", "sp-signing", "standin-signing")
    ]
    assert first.sp_signing == second.sp_signing
    assert first.sp_encryption == second.sp_encryption
    assert first.sp_signing != first.sp_encryption
    assert again == []


@pytest.mark.parametrize("off", ["false", "off", "No", "0"])
def test_tls_verification_cannot_be_switched_off_in_production(tmp_path, off):
    # A ConfigError like every other setting's: the commands print it as one line.
    with pytest.raises(ConfigError, match=f"WK_TLS_VERIFY={off} is not allowed in production"):
        WkSettings.from_env(
            {"WK_NODE_URL": "https://login.gov.pl", "WK_TLS_VERIFY": off},
            base_url=SP_URL,
            instance_dir=tmp_path,
            production=True,
        )


@pytest.mark.parametrize(
    ("value", "verify"),
    [
        ("off", False),
        ("NO", False),
        ("on", True),
        ("1", True),
        ("", True),
    ],
)
def test_tls_verification_takes_the_yes_no_words_of_every_setting(tmp_path, value, verify):
    settings = WkSettings.from_env(
        {"WK_TLS_VERIFY": value}, base_url=SP_URL, instance_dir=tmp_path, production=False
    )

    assert settings.tls_verify is verify


def test_tls_verification_takes_a_ca_bundle_file(tmp_path):
    bundle = tmp_path / "node-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")

    settings = WkSettings.from_env(
        {"WK_TLS_VERIFY": str(bundle)}, base_url=SP_URL, instance_dir=tmp_path, production=False
    )

    assert settings.tls_verify == str(bundle)


@pytest.mark.parametrize("value", ["maybe", "/etc/ssl/no-such-ca.pem", "/etc"])
def test_tls_verification_refuses_what_is_neither_a_yes_no_word_nor_a_file(tmp_path, value):
    # Taken as a CA bundle, it failed only at the first login, in httpx, naming no setting.
    with pytest.raises(WkConfigError) as error:
        WkSettings.from_env(
            {"WK_TLS_VERIFY": value}, base_url=SP_URL, instance_dir=tmp_path, production=False
        )

    assert str(error.value) == (
        "WK_TLS_VERIFY must be true or false (1/0, yes/no, on/off) or the path of a CA bundle "
        f"file, got {value!r}, which is no file"
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("WK_TIMEOUT_SECONDS", "-1", "WK_TIMEOUT_SECONDS must be a positive number, got '-1'"),
        ("WK_TIMEOUT_SECONDS", "nan", "WK_TIMEOUT_SECONDS must be a positive number, got 'nan'"),
        ("WK_TIMEOUT_SECONDS", "inf", "WK_TIMEOUT_SECONDS must be a positive number, got 'inf'"),
        ("WK_TIMEOUT_SECONDS", "ten", "WK_TIMEOUT_SECONDS must be a positive number, got 'ten'"),
        (
            "WK_CLOCK_SKEW_SECONDS",
            "0",
            "WK_CLOCK_SKEW_SECONDS must be a positive whole number, got '0'",
        ),
        (
            "WK_MESSAGE_LIFETIME_SECONDS",
            "2.5",
            "WK_MESSAGE_LIFETIME_SECONDS must be a positive whole number, got '2.5'",
        ),
    ],
)
def test_a_wk_number_that_does_not_fit_is_refused_naming_it_and_its_value(
    tmp_path, name, value, message
):
    with pytest.raises(WkConfigError) as error:
        WkSettings.from_env({name: value}, base_url=SP_URL, instance_dir=tmp_path, production=False)

    assert str(error.value) == message


def test_an_unknown_level_of_assurance_is_refused(tmp_path):
    with pytest.raises(WkConfigError, match="WK_LOA"):
        WkSettings.from_env(
            {"WK_LOA": "extreme"}, base_url=SP_URL, instance_dir=tmp_path, production=False
        )


# -- the stand-in ----------------------------------------------------------------------


@pytest.mark.parametrize("app_env", ["production", "prod"])
def test_the_stand_in_refuses_a_production_configuration(tmp_path, standin_app, app_env):
    with pytest.raises(StandinRefused, match="never in production"):
        StandinSettings.from_env(
            {"APP_ENV": app_env},
            base_url="http://127.0.0.1:5001",
            service_base_url=SP_URL,
            instance_dir=tmp_path,
        )
    node_settings = standin_app.extensions["wk_standin"].settings
    with pytest.raises(StandinRefused):
        create_standin_app(StandinSettings(**{**node_settings.__dict__, "app_env": app_env}))


def test_the_stand_in_and_the_service_agree_on_development_keys(tmp_path):
    service = WkSettings.from_env(
        {"WK_NODE_URL": "http://127.0.0.1:5001"},
        base_url=SP_URL,
        instance_dir=tmp_path,
        production=False,
    )
    standin = StandinSettings.from_env(
        {}, base_url="http://127.0.0.1:5001", service_base_url=SP_URL, instance_dir=tmp_path
    )

    assert standin.signing.cert_pem == service.node_cert_pem
    assert standin.entity_id == service.node_entity_id
    assert standin.sp_encryption_cert_pem == service.sp_encryption.cert_pem
    assert standin.sp_acs_url == service.acs_url


def test_the_login_page_offers_the_form_and_the_demo_people(sp, browser):
    _, page = browser.login_page(sp)
    document = etree.HTML(page.data)

    assert "Węzeł Krajowy – logowanie (stand-in)" in page.text
    names = {i.get("name") for i in document.iter("input")}
    assert {"first_name", "last_name", "pesel", "date_of_birth"} <= names
    buttons = [b.text.strip() for b in document.iter("button") if b.get("type") == "submit"]
    assert {"Zaloguj", "Anuluj"} <= set(buttons)
    for person in DEMO_IDENTITIES:
        assert person.pesel in page.text


def test_a_malformed_date_of_birth_is_asked_again(sp, browser):
    _, page = browser.login_page(sp)
    ticket = etree.HTML(page.data).find(".//input[@name='ticket']").get("value")

    answer = browser.client.post(
        "/login/standin/submit",
        data={
            "ticket": ticket,
            "action": "login",
            "first_name": ANNA.first_name,
            "last_name": ANNA.last_name,
            "pesel": ANNA.pesel,
            "date_of_birth": "27.04.1987",
        },
    )

    assert answer.status_code == 422
    assert "RRRR-MM-DD" in answer.text


def test_demo_people_have_valid_pesels_matching_their_birth_dates():
    keys = [p.key for p in DEMO_IDENTITIES]
    assert len(set(keys)) == len(keys)
    hermegilda = next(p for p in DEMO_IDENTITIES if p.key == "hermegilda")
    assert hermegilda.pesel == "97040117247"
    for person in DEMO_IDENTITIES:
        assert pesel_number.is_valid(person.pesel), person
        assert pesel_number.get_birth_date(person.pesel) == person.date_of_birth, person
    assert ANNA.last_name == "Mickiewicz-Sokołowska" and ANNA.pesel != "87042787635"
    assert {"blocked", "no_account", "already_migrated", "duplicate_pesel"} <= {
        p.scenario for p in DEMO_IDENTITIES
    }
