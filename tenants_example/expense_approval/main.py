"""Expense approval: wait for a human decision (an event), with a timeout.

Params: {"expense_id": str, "amount": float, "submitter": str, "timeout": duration (default "3 days")}
Event:  type "decision", payload {"approved": bool, "by": str, "note": str (optional)}
"""

from tenantflow import NonRetryableError, log


def run(event, step):
    expense = event["payload"]
    if expense["amount"] <= 0:
        raise NonRetryableError("an expense must have a positive amount")

    request = step.do("request approval", lambda: {
        "expense_id": expense["expense_id"], "amount": expense["amount"], "notified": "manager@example.com",
    })

    try:
        decision = step.wait_for_event("manager decision", "decision", timeout=expense.get("timeout", "3 days"))
    except Exception as exc:  # the wait timed out: nobody decided in time
        log("no decision for %s: %s" % (expense["expense_id"], exc))
        escalated = step.do("escalate", lambda: "finance@example.com")
        return {"expense_id": expense["expense_id"], "status": "escalated", "escalated_to": escalated,
                "request": request}

    answer = decision["payload"]
    status = "approved" if answer.get("approved") else "rejected"
    if status == "approved":
        step.do("schedule payout", lambda: {"payout": expense["amount"], "to": expense["submitter"]})
    return {"expense_id": expense["expense_id"], "status": status, "by": answer.get("by"), "request": request}
