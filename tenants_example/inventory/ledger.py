"""An append-only ledger in env.db (the tenant's own SQLite database)."""

from tenantflow import env


def ensure_ledger():
    env.db.execute(sql="CREATE TABLE IF NOT EXISTS ledger (sku TEXT NOT NULL, qty INTEGER NOT NULL, "
                       "level INTEGER NOT NULL, instance TEXT NOT NULL)")
    return True


def record(movement, instance):
    env.db.execute(sql="INSERT INTO ledger (sku, qty, level, instance) VALUES (?, ?, ?, ?)",
                   params=[movement["sku"], movement["qty"], movement["level"], instance])
    return movement


def totals():
    rows = env.db.execute(sql="SELECT sku, SUM(qty), COUNT(*) FROM ledger GROUP BY sku ORDER BY sku")["rows"]
    return {row[0]: {"net": row[1], "movements": row[2]} for row in rows}
