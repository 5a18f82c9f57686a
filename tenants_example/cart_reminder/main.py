"""Abandoned-cart reminder: a durable sleep, then a reminder unless the cart was checked out.

Params: {"cart_id": str, "email": str, "items": [str], "wait": duration (default "1 hour"),
         "checked_out": bool (optional; stands in for a lookup of the cart's state)}
"""

from tenantflow import log


def run(event, step):
    cart = event["payload"]
    snapshot = step.do("snapshot cart", lambda: {"cart_id": cart["cart_id"], "items": list(cart["items"])})

    # The instance sleeps durably: no process waits, and a restart of the server does not lose it.
    step.sleep("wait before reminding", cart.get("wait", "1 hour"))

    still_open = step.do("check cart", lambda: not cart.get("checked_out", False))
    if not still_open:
        return {"cart_id": cart["cart_id"], "reminded": False}

    @step.do("send reminder")
    def send():
        subject = "You left %d item(s) in your cart" % len(snapshot["items"])
        log("reminder to %s: %s" % (cart["email"], subject))
        return {"to": cart["email"], "subject": subject}

    return {"cart_id": cart["cart_id"], "reminded": True, "message": send()}
