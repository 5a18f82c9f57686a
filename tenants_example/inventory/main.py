"""Inventory movements on the tenant's own storage (a multi-file bundle).

Params: {"movements": [{"sku": str, "qty": int}]}  (positive qty restocks, negative sells)
"""

from ledger import ensure_ledger, record, totals
from stock import apply_movement


def run(event, step):
    movements = event["payload"]["movements"]
    step.do("prepare ledger", ensure_ledger)
    results = []
    for index, movement in enumerate(movements):
        # One step per movement: each is applied exactly once, even across crashes and replays.
        result = step.do("move %d %s" % (index, movement["sku"]),
                         lambda: record(apply_movement(movement["sku"], movement["qty"]), event["instanceId"]))
        results.append(result)
    summary = step.do("ledger totals", totals)
    return {"movements": results, "ledger": summary}
