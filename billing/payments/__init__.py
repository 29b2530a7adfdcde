"""Selling credits: packages, a payment provider's checkout, and its webhooks granting once.

    packages.py   CreditPackage (what an operator sells) and the price arithmetic
    provider.py   the small interface every payment provider implements, and the notices its
                  verified webhooks become (Paid, Reversed, Ignored)
    credits.py    the money: a notice becomes one ``payments`` row plus one ledger entry, in one
                  transaction, exactly once per (provider, event id)

The providers themselves (Stripe, LemonSqueezy) live in modules of their own next to these and
know nothing of the ledger; the gateway wires a configured provider to the webhook route.
"""
