from flow import NonRetryable, Retryable, step_type


@step_type("billing.charge", config={"customer": str, "amount": int})
def charge(ctx, customer, amount):
    ctx.logger.info("charging %s %s EUR", customer, amount)
    if amount <= 0:
        raise NonRetryable(f"cannot charge {amount} EUR")  # fails the run at once
    if customer == "busy" and ctx.attempt == 1:
        raise Retryable("payment gateway busy", delay=2)  # tried again in 2 s
    return {"id": f"ch_{ctx.idempotency_key[:8]}", "amount": amount}
