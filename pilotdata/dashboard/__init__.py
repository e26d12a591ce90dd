"""The live web dashboard (``pdata dashboard``): what runs where, what failed and why, what moved.

A page served on 127.0.0.1 (by default) behind a random access token, that reads coordination and the
SQL history through the query layer (:mod:`pilotdata.inspect`) and stays responsive at 100,000
ComputeUnits: every panel is an aggregate or a page computed on the server, the history is refreshed
by one background thread, and responses are cached per refresh generation.

* :mod:`.panels`: what each panel shows, as JSON-able values built from the query layer;
* :mod:`.live`: the refresh thread, the generations and the response cache (:class:`LiveState`);
* :mod:`.app`: the Starlette application: the page, its assets, its JSON API, the token guard;
* :mod:`.server`: one listening socket on the address asked, and uvicorn on it.
* ``static/``: the page, its script and style, and Chart.js (MIT, vendored with its licence).

Starlette and uvicorn are the optional extra ``dashboard`` (``pip install 'pilot-data[dashboard]'``);
:mod:`.panels` and :mod:`.live` need neither. The user's guide is ``docs/dashboard.md``.
"""

from __future__ import annotations

from pilotdata.dashboard.live import LiveState, Snapshot
from pilotdata.dashboard.server import INSTALL_HINT, BindError, Listener, bind, new_token

__all__ = ["INSTALL_HINT", "BindError", "Listener", "LiveState", "Snapshot", "bind", "new_token"]
