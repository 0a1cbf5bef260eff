"""The web container: web circuits drawn in a browser page, and the operator view.

``jet web`` (see :mod:`jet.web.cli`) and ``jet run`` start it with
:func:`serving`; docs/web.md describes the page, its WebSocket protocol and
the security choices.
"""

from jet.web.server import serving

__all__ = ["serving"]
