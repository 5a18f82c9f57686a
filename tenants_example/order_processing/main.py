"""Order processing with retries and a non-retryable failure.

Params: {"order_id": str, "items": [{"sku": str, "qty": int, "price": float}], "card": str,
         "flaky_attempts": int (optional, how many reservation attempts fail first)}
"""

from tenantflow import NonRetryableError, log

QUICK_RETRIES = {"retries": {"limit": 4, "delay": 100, "backoff": "exponential"}, "timeout": "30 seconds"}


def run(event, step):
    order = event["payload"]
    flaky = order.get("flaky_attempts", 1)

    @step.do("reserve stock", config=QUICK_RETRIES)
    def reserve(ctx):
        # The warehouse API is flaky: the first attempts time out, a retry succeeds.
        if ctx["attempt"] <= flaky:
            raise ConnectionError("warehouse API timed out (attempt %d)" % ctx["attempt"])
        return {"reservation": "R-" + order["order_id"], "attempts": ctx["attempt"]}

    reservation = reserve()

    total = step.do("price order", lambda: round(sum(i["qty"] * i["price"] for i in order["items"]), 2))

    @step.do("charge card", config=QUICK_RETRIES)
    def charge():
        if order["card"] == "declined":
            # Retrying cannot help: fail the step (and the instance) right away.
            raise NonRetryableError("card declined for order " + order["order_id"])
        return {"charge_id": "ch_" + order["order_id"], "amount": total}

    payment = charge()
    log("charged %s for order %s" % (payment["amount"], order["order_id"]))
    shipment = step.do("create shipment", lambda: {"tracking": "TRK-" + order["order_id"]})
    return {"order_id": order["order_id"], "total": total, "reservation": reservation, "payment": payment,
            "shipment": shipment}
