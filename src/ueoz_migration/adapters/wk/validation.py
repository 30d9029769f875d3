"""Let python3-saml validate the node's Response once it has been decrypted.

python3-saml does well what it was built for: destination, InResponseTo, audience,
issuer, conditions and times, subject confirmation, the number of assertions, and the
signatures. Two things keep it from taking the node's Response as it comes:

- it decrypts with libxmlsec1, which cannot read the node's ECDH-ES; so the Response
  is handed over with the assertion already decrypted (`decrypted_document`), exactly
  the state python3-saml's own constructor would have left it in, while `document`
  stays the signed original whose signature it checks;
- in strict mode it validates against the SAML schema, which does not know the eIDAS
  `naturalperson:…Type` values (libxml2 refuses an `xsi:type` it cannot resolve) and
  which it re-reads from disk on every call (~3 ms). Its `is_valid` is therefore run
  with a schema helper that adds the eIDAS natural person types and compiles the
  combination once per thread.

Which check is done where, for one login:

- `ServiceProvider` (through `xmlsig.Verifier`, held to libxmlsec1's verdict by the
  tests): the signatures of the ArtifactResponse and of the Response in place in the
  SOAP envelope, each against the node's configured key only, in the profile's one
  shape, with a document-unique ID; their Version, Issuer, InResponseTo and
  IssueInstant; the status codes; one EncryptedAssertion and no plaintext one; the
  assertion's own signature, if any; then an audience naming this service (python3-saml
  checks the audience only when there is one), LoA, attributes, PESEL, and replay of
  artifact and assertion ID.
- python3-saml (`is_valid`): the schema (of both documents), the status, the number of
  assertions, which elements are signed and how (references, algorithms), InResponseTo,
  Destination, audience, issuers, conditions and times, subject confirmation, and the
  assertion's signature, if any, in the decrypted document. The one check it does not
  repeat is the ECDSA verification of the Response's own signature, already verified
  above on the Response that `document` is a copy of (see `_validate_sign`).

python3-saml's own code runs unchanged, with helpers swapped into the globals of this
module's copies of its Response methods: the schema above, its XPath expressions
compiled once per thread instead of on every query, its instants read without
strptime where they have the usual shape (`_parse_saml_time`), and that one
signature. The helpers are bound to these copies only; python3-saml is left untouched
for anyone else.
"""

from __future__ import annotations

import calendar
import datetime
import re
import threading
import types
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import onelogin.saml2
import structlog
from lxml import etree
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.response import OneLogin_Saml2_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils, return_false_on_exception
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

from .settings import WkSettings

log = structlog.get_logger(__name__)

_PROTOCOL_XSD = Path(onelogin.saml2.__file__).parent / "schemas" / "saml-schema-protocol-2.0.xsd"

# The SAML schema does not know what the node puts inside its messages: the eIDAS
# natural person types of AttributeValue/@xsi:type, and the XML Encryption 1.1
# KeyDerivationMethod that xenc:AgreementMethod's strict wildcard demands a
# declaration for. These schemas add them; the root one imports all three namespaces.
_ROOT_XSD = f"""\
<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:ueoz:wk:schema">
  <xsd:import namespace="urn:oasis:names:tc:SAML:2.0:protocol"
      schemaLocation="{_PROTOCOL_XSD.as_uri()}"/>
  <xsd:import namespace="http://eidas.europa.eu/attributes/naturalperson"
      schemaLocation="urn:ueoz:wk:naturalperson.xsd"/>
  <xsd:import namespace="http://www.w3.org/2009/xmlenc11#"
      schemaLocation="urn:ueoz:wk:xenc11.xsd"/>
</xsd:schema>
"""

_NAME_TYPE = """
  <xsd:complexType name="{name}">
    <xsd:simpleContent>
      <xsd:extension base="xsd:string">
        <xsd:attribute name="LatinScript" type="xsd:boolean" default="true"/>
      </xsd:extension>
    </xsd:simpleContent>
  </xsd:complexType>"""

_NATURAL_PERSON_XSD = f"""\
<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    targetNamespace="http://eidas.europa.eu/attributes/naturalperson">
  {_NAME_TYPE.format(name="CurrentFamilyNameType")}
  {_NAME_TYPE.format(name="CurrentGivenNameType")}
  <xsd:simpleType name="DateOfBirthType">
    <xsd:restriction base="xsd:date"/>
  </xsd:simpleType>
  <xsd:simpleType name="PersonIdentifierType">
    <xsd:restriction base="xsd:string"/>
  </xsd:simpleType>
</xsd:schema>
"""

_XENC11_XSD = """\
<xsd:schema xmlns:xsd="http://www.w3.org/2001/XMLSchema"
    targetNamespace="http://www.w3.org/2009/xmlenc11#">
  <xsd:element name="KeyDerivationMethod">
    <xsd:complexType>
      <xsd:sequence>
        <xsd:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
      </xsd:sequence>
      <xsd:attribute name="Algorithm" type="xsd:anyURI" use="required"/>
    </xsd:complexType>
  </xsd:element>
</xsd:schema>
"""


class _SchemaResolver(etree.Resolver):
    _schemas: ClassVar[dict[str, str]] = {
        "urn:ueoz:wk:naturalperson.xsd": _NATURAL_PERSON_XSD,
        "urn:ueoz:wk:xenc11.xsd": _XENC11_XSD,
    }

    def resolve(self, system_url, public_id, context):
        if system_url in self._schemas:
            return self.resolve_string(self._schemas[system_url], context)
        return None


# libxml2 finds a schema's imports through a loader that is global to the process: while
# other threads parse XML, a compilation may miss our resolver, and an import that fails is
# only a warning, so a thread would keep a schema without the eIDAS types and refuse every
# login it serves. Compile one at a time, and check the result before using it.
_COMPILING = threading.Lock()
_COMPILE_TRIES = 5
_PROBES = (
    b'<saml:AttributeValue xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"'
    b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    b' xmlns:eidas="http://eidas.europa.eu/attributes/naturalperson"'
    b' xsi:type="eidas:PersonIdentifierType">PL/PL/87042712342</saml:AttributeValue>',
    b'<xenc11:KeyDerivationMethod xmlns:xenc11="http://www.w3.org/2009/xmlenc11#"'
    b' Algorithm="urn:probe"/>',
)


def _compile_schema() -> etree.XMLSchema:
    with _COMPILING:
        for _ in range(_COMPILE_TRIES):
            parser = etree.XMLParser(no_network=True)
            parser.resolvers.add(_SchemaResolver())
            schema = etree.XMLSchema(etree.fromstring(_ROOT_XSD.encode(), parser))
            if all(schema.validate(etree.fromstring(probe)) for probe in _PROBES):
                return schema
            log.warning("wk.schema_compiled_without_eidas_types")
    raise RuntimeError("the SAML schema keeps compiling without the eIDAS types")


# python3-saml reads each instant with strptime, trying the format without fractions
# first: two strptime calls (~40 µs) for every instant of the node, which writes
# milliseconds. The usual shapes are read directly to the same result; anything else,
# or a field out of range, goes to python3-saml's own function.
_SAML_INSTANT = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.\d{1,6})?Z", re.ASCII)


def _parse_saml_time(timestr):
    # Same contract as OneLogin_Saml2_Utils.parse_SAML_to_time: whole seconds since
    # the epoch, the fraction ignored.
    match = _SAML_INSTANT.fullmatch(timestr) if isinstance(timestr, str) else None
    if match:
        try:
            moment = datetime.datetime(*(int(field) for field in match.groups()))
        except ValueError:
            pass
        else:
            return calendar.timegm(moment.utctimetuple())
    return OneLogin_Saml2_Utils.parse_SAML_to_time(timestr)


_EXCEPT_FALSE = return_false_on_exception(lambda: None).__code__


def _with_helpers(function: types.FunctionType, helpers: dict) -> types.FunctionType:
    decorated = function.__closure__ is not None
    if decorated and function.__code__ is not _EXCEPT_FALSE:
        raise RuntimeError(f"python3-saml's {function.__name__} has an unknown decorator")
    inner = function.__wrapped__ if decorated else function
    copy = types.FunctionType(
        inner.__code__,
        {**inner.__globals__, **helpers},
        inner.__name__,
        inner.__defaults__,
        inner.__closure__,
    )
    return return_false_on_exception(copy) if decorated else copy


class ResponseValidator:
    """python3-saml's checks of a node Response, set up once per service provider."""

    def __init__(self, settings: WkSettings) -> None:
        self._settings = OneLogin_Saml2_Settings(
            self._settings_dict(settings), sp_validation_only=False
        )
        acs = urlsplit(settings.acs_url)
        # python3-saml rebuilds "the URL the response arrived at" from these to check
        # Destination and Recipient: it must be exactly our ACS.
        self._request_data = {
            "https": "on" if acs.scheme == "https" else "off",
            "http_host": acs.netloc,
            "script_name": acs.path,
        }
        self._local = threading.local()
        helpers = {
            # The Conditions' window gets the service's configured clock skew, not the
            # 300 s python3-saml hard-codes (the assertion's replay entry lasts just that).
            "OneLogin_Saml2_Constants": type(
                "_NodeConstants",
                (OneLogin_Saml2_Constants,),
                {"ALLOWED_CLOCK_DRIFT": settings.clock_skew_seconds},
            ),
            "OneLogin_Saml2_XML": type(
                "_NodeXML",
                (OneLogin_Saml2_XML,),
                {
                    "validate_xml": staticmethod(self._validate_xml),
                    "query": staticmethod(self._query),
                },
            ),
            "OneLogin_Saml2_Utils": type(
                "_NodeUtils",
                (OneLogin_Saml2_Utils,),
                {
                    "validate_sign": staticmethod(self._validate_sign),
                    "parse_SAML_to_time": staticmethod(_parse_saml_time),
                },
            ),
        }
        # Every method but the constructor (is_valid and what it calls) is copied with
        # these helpers; the two decorated ones are copied inside and decorated again.
        self._response_class = type(
            "_CheckedNodeResponse",
            (_NodeResponse,),
            {
                name: _with_helpers(function, helpers)
                for name, function in vars(OneLogin_Saml2_Response).items()
                if isinstance(function, types.FunctionType) and name != "__init__"
            },
        )

    def validate(
        self,
        document: etree._Element,
        decrypted_document: etree._Element,
        request_id: str,
        *,
        verified_signature: etree._Element | None = None,
    ) -> OneLogin_Saml2_Response:
        """Run python3-saml's strict validation; raise its ValidationError on failure.

        `verified_signature` is the Signature element of `document` whose ECDSA
        verification the caller has already done; python3-saml does the rest.
        """
        response = self._response_class(self._settings, document, decrypted_document)
        self._local.verified = verified_signature
        try:
            response.is_valid(self._request_data, request_id=request_id, raise_exceptions=True)
        finally:
            self._local.verified = None
        return response

    def _query(self, dom, query, context=None, tagid=None):
        # Same contract as OneLogin_Saml2_XML.query; each expression compiled once per
        # thread (python3-saml's few dozen queries per login each compiled anew).
        cache = self._local.__dict__.setdefault("xpaths", {})
        compiled = cache.get(query)
        if compiled is None:
            compiled = cache[query] = etree.XPath(query, namespaces=OneLogin_Saml2_Constants.NSMAP)
        source = dom if context is None else context
        return compiled(source) if tagid is None else compiled(source, tagid=tagid)

    def _validate_sign(self, xml, *args, xpath=None, **kwargs):
        # Same contract as OneLogin_Saml2_Utils.validate_sign. The signature the
        # caller verified (with the node's key, the same one python3-saml would use)
        # is not verified twice; any other one, e.g. a signed assertion's, is.
        verified = getattr(self._local, "verified", None)
        if verified is not None and xpath is not None:
            found = self._query(xml, xpath)
            if len(found) == 1 and found[0] is verified:
                return True
        return OneLogin_Saml2_Utils.validate_sign(xml, *args, xpath=xpath, **kwargs)

    def _validate_xml(self, xml, schema, debug=False):
        # Same contract as OneLogin_Saml2_XML.validate_xml: the element, or an error string.
        compiled = getattr(self._local, "schema", None)
        if compiled is None:
            compiled = self._local.schema = _compile_schema()
        if compiled.validate(xml):
            return xml
        # libxml2's message quotes the offending value, which may be a name or a date of
        # birth: the log gets where and what kind of error, not the message.
        error = compiled.error_log.last_error
        log.info("wk.response_schema_invalid", error=error.type_name, path=error.path)
        return "invalid_xml"

    @staticmethod
    def _settings_dict(settings: WkSettings) -> dict:
        return {
            "strict": True,
            "debug": False,
            "sp": {
                "entityId": settings.sp_entity_id,
                "assertionConsumerService": {
                    "url": settings.acs_url,
                    "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact",
                },
                "NameIDFormat": "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
                # python3-saml insists on a key pair once assertions must be encrypted,
                # though it never decrypts here (see _NodeResponse).
                "x509cert": settings.sp_encryption.cert_pem.decode("ascii"),
                "privateKey": settings.sp_encryption.key_pem.decode("ascii"),
            },
            "idp": {
                "entityId": settings.node_entity_id,
                "singleSignOnService": {"url": settings.sso_url},
                "x509cert": settings.node_cert_pem.decode("ascii"),
            },
            "security": {
                "wantMessagesSigned": True,
                # The profile leaves the assertion's own signature optional; when it
                # is there python3-saml still verifies it.
                "wantAssertionsSigned": False,
                "wantAssertionsEncrypted": True,
                "wantNameIdEncrypted": False,
                "wantAttributeStatement": True,
                "requestedAuthnContext": False,
                "rejectDeprecatedAlgorithm": True,
            },
        }


class _NodeResponse(OneLogin_Saml2_Response):
    """A python3-saml Response built from trees the service has already parsed."""

    def __init__(self, settings, document, decrypted_document):
        # The base constructor would base64-decode and parse the message again, then
        # try to decrypt with libxmlsec1; this leaves the object in the same state.
        self._settings = settings
        self._error = None
        self.response = None
        self.document = document
        self.decrypted_document = decrypted_document
        self.encrypted = True
        self.valid_scd_not_on_or_after = None
