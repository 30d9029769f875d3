"""What happens in each state of the migration flow.

``flows/migration.yaml`` says which states exist and which events move between them; the
modules here say what each step does. Every name the flow file uses under ``enter``,
``before`` or ``on`` is a method of :class:`AttemptModel`, written in the module of the state
it belongs to. A ``before`` behaviour checks and may raise :class:`Rejected`; any exception
aborts the transition and the transaction around it, so nothing half-done is stored.
"""

from .awaiting_verification import AwaitingVerification
from .base import AttemptContext, MailComposer, Rejected, StateBehaviour
from .email_entry import EmailEntry
from .error import Error
from .finals import Finals
from .found import Found
from .handed_off import HandedOff
from .searching import Searching


class AttemptModel(Searching, Found, Error, EmailEntry, AwaitingVerification, Finals, HandedOff):
    """The model a flow machine runs on: one attempt, in one transaction."""


__all__ = ["AttemptContext", "AttemptModel", "MailComposer", "Rejected", "StateBehaviour"]
