"""The composition root: build the service's parts from its settings, once per process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .adapters.mail_templates import TemplateMailComposer
from .adapters.pending_logins import PendingLogins
from .adapters.wk import ServiceProvider, WkSettings
from .adapters.wk_replay import DbReplayStore
from .config import Settings
from .db.engine import make_engine, make_sessionmaker
from .flow import Flow, load_flow_file
from .journey import Journey
from .oidc.authorizations import Authorizations
from .oidc.clients import ClientRegistry
from .oidc.codes import Codes
from .oidc.keys import SigningKeys
from .oidc.provider import Provider
from .oidc.server import OidcServer
from .oidc.sso import SsoSessions
from .states.base import Policy


@dataclass
class Services:
    """Everything a web worker, a CLI command or a background worker needs."""

    settings: Settings

    @classmethod
    def from_env(cls, *, existing_audit_key: bool = False) -> Services:
        return cls(Settings.from_env(existing_audit_key=existing_audit_key))

    @cached_property
    def engine(self) -> Engine:
        settings = self.settings
        return make_engine(settings.database_url, connect_wait=settings.database_connect_wait)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def flow(self) -> Flow:
        return load_flow_file()

    @cached_property
    def policy(self) -> Policy:
        settings = self.settings
        return Policy(
            attempt_ttl=settings.attempt_ttl,
            verification_link_ttl=settings.verification_link_ttl,
            resend_limit_per_hour=settings.resend_limit_per_hour,
            base_url=settings.base_url,
        )

    @cached_property
    def service_provider(self) -> ServiceProvider:
        """The login through the national node, with the replay store every process shares."""
        settings = self.settings
        wk = WkSettings.from_env(
            settings.raw,
            base_url=settings.base_url,
            instance_dir=settings.instance_dir,
            production=settings.production,
        )
        return ServiceProvider(wk, DbReplayStore(self.sessions))

    @cached_property
    def pending_logins(self) -> PendingLogins:
        return PendingLogins(self.sessions)

    @cached_property
    def journey(self) -> Journey:
        return Journey(
            self.sessions,
            flow=self.flow,
            policy=self.policy,
            audit_key=self.settings.audit_key,
            pesel_key=self.settings.pesel_key,
            mail=TemplateMailComposer(
                helpdesk_phone=self.settings.helpdesk_phone,
                helpdesk_email=self.settings.helpdesk_email,
            ),
        )

    # -- the OpenID Provider for the domain systems ---------------------------------------

    @cached_property
    def clients(self) -> ClientRegistry:
        return ClientRegistry(self.sessions, production=self.settings.production)

    @cached_property
    def signing_keys(self) -> SigningKeys:
        """The ID token signing keys; the embedded default makes its first one."""
        return SigningKeys.open(self.settings.oidc_keys_dir, create=not self.settings.production)

    @cached_property
    def provider(self) -> Provider:
        settings = self.settings
        codes = Codes(self.sessions, code_ttl=settings.oidc_code_ttl)
        server = OidcServer(
            issuer=settings.base_url,
            registry=self.clients,
            keys=self.signing_keys,
            codes=codes,
            subject_key=settings.oidc_subject_key,
            token_ttl=settings.oidc_token_ttl,
            replay_store=DbReplayStore(self.sessions),
        )
        return Provider(
            self.sessions,
            issuer=settings.base_url,
            registry=self.clients,
            sso=SsoSessions(self.sessions, ttl=settings.sso_session_ttl),
            authorizations=Authorizations(self.sessions, ttl=settings.oidc_authorization_ttl),
            codes=codes,
            server=server,
            subject_key=settings.oidc_subject_key,
        )
