"""The ledger as CloudEvents 1.0 (JSON batch mode): what ``usage export --format cloudevents`` writes.

OpenMeter or any CloudEvents consumer can ingest it; each event is deduplicated by (source, id).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.metering.ledger.rows import LedgerRow

CLOUDEVENT_TYPE = "ai.democratic.usage.v1"


def cloudevents(rows: Iterable[tuple[str, LedgerRow]]) -> list[dict[str, Any]]:
    """Rows as a CloudEvents 1.0 JSON batch (a list of structured events).

    ``source`` is the site node id (a valid URI-reference), ``id`` the event id, so a consumer
    deduplicating by (source, id) counts each event once; ``subject`` is the tenant id.  ``data``
    holds the row's other columns, ``units`` as an object and ``credits`` as exact decimal text.
    """
    out: list[dict[str, Any]] = []
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for site, row in rows:
        data = row.to_dict()
        del data["event_id"], data["tenant_id"]
        data["units"] = json.loads(row.units)
        out.append({
            "specversion": "1.0", "id": row.event_id, "source": site, "type": CLOUDEVENT_TYPE,
            "subject": row.tenant_id,
            "time": (epoch + timedelta(microseconds=row.ts_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "datacontenttype": "application/json", "data": data,
        })
    return out
