"""Shell completion of ids: stores, DataUnits (ids and names), ComputeUnits, pilots and runs.

Click calls these while completing (``_PDATA_COMPLETE=bash_source pdata``); no command runs then, so
they open coordination themselves from ``--url`` / ``--namespace`` as typed so far, else the
environment and defaults. They never fail: a backend that cannot be reached completes nothing, and a
``PDATA_HOME`` that does not exist is not created.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click
from click.shell_completion import CompletionItem

from pilotdata.states import Kind

__all__ = ["complete_cus", "complete_dus", "complete_pilots", "complete_runs", "complete_stores", "completer"]

LIMIT = 200
"""Most candidates offered (a namespace may hold 100,000 CUs)."""


def _candidates(ctx: click.Context, kind: Kind, incomplete: str) -> list[CompletionItem]:
    root = ctx.find_root().params
    home = os.environ.get("PDATA_HOME")
    if not root.get("url") and home and not Path(home).expanduser().is_dir():
        return []
    try:
        from pilotdata.coordination import connect

        coord = connect(root.get("url"), root.get("namespace"))
    except Exception:  # completion must never fail the shell
        return []
    try:
        out: list[CompletionItem] = []
        ids = coord.list_ids(kind)
        for entity_id in ids:
            if entity_id.startswith(incomplete):
                out.append(CompletionItem(entity_id))
                if len(out) >= LIMIT:
                    return out
        if kind is Kind.DU and len(ids) <= 5000:
            names = {str(r.data.get("name")) for r in coord.get_many(kind, ids) if r is not None and r.data.get("name")}
            out += [CompletionItem(n, help="DataUnit name") for n in sorted(names - set(ids))
                    if n.startswith(incomplete)]
        return out[:LIMIT]
    except Exception:
        return []
    finally:
        coord.close()


def completer(kind: Kind) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """A ``shell_complete`` callback offering the ids of ``kind`` that start with what was typed."""

    def complete(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        return _candidates(ctx, kind, incomplete)

    return complete


complete_cus = completer(Kind.CU)
complete_dus = completer(Kind.DU)
complete_pilots = completer(Kind.PILOT)
complete_stores = completer(Kind.PD)
complete_runs = completer(Kind.RUN)
