"""The staff console: helpdesk, auditors and operators on the web (docs/console.md).

The rules live here; ``web/console.py`` only translates HTTP into them, as ``web/oidc.py``
does for ``oidc/``:

- ``staff.py``: who may sign in and in which roles (``staff grant``, ``revoke``, ``list``);
- ``looks.py``: who looked at whom, and the helpdesk's hourly limit of look-ups;
- ``story.py``: one attempt as the helpdesk reads it, its path drawn on the flow;
- ``actions.py``: what the helpdesk may do to an attempt, through the journey;
- ``audits.py``: the auditors' checks and exports, over ``audit/``;
- ``progress.py``: the migration as a whole, from SQL aggregates; ``charts.py`` draws it.
"""
