"""Stock levels in env.kv: one key per SKU."""

from tenantflow import NonRetryableError, env


def apply_movement(sku, qty):
    key = "stock:" + sku
    level = env.kv.get(key=key) or 0
    if level + qty < 0:
        raise NonRetryableError("not enough %s in stock (%d, wanted %d)" % (sku, level, -qty))
    env.kv.put(key=key, value=level + qty)
    return {"sku": sku, "qty": qty, "level": level + qty}
