"""A realistic rule set, for the benchmarks and the documentation: ten active and
five shadow rules of the kinds a fraud team writes (amounts against the
customer's own history, terminal risk, night, channel and type lists)."""

from __future__ import annotations

#: (id, action, mode, expression): the kinds of rules a fraud team writes,
#: thresholds scaled to the handbook data's amounts (median about R$ 45).
SAMPLE_RULES: list[tuple[str, str, str, str]] = [
    ("pix-night-big", "decline", "active", 'type == "pix" and is_night and amount > 100'),
    ("pix-burst", "review", "active", 'type == "pix" and customer_tx_count_1d >= 8'),
    (
        "amount-vs-history",
        "review",
        "active",
        "amount > 5 * customer_avg_amount_30d and customer_tx_count_30d >= 3",
    ),
    ("risky-terminal", "decline", "active", "terminal_risk_7d > 0.5 and terminal_tx_count_7d >= 5"),
    ("fraud-streak", "decline", "active", "terminal_known_fraud_streak >= 2"),
    (
        "web-ted",
        "step_up",
        "active",
        'type in ["ted", "pix"] and channel in ["web", "api"] and amount > 100',
    ),
    (
        "weekend-late",
        "review",
        "active",
        "is_weekend and (local_hour >= 23 or local_hour < 4) and amount > 50",
    ),
    ("boleto-huge", "review", "active", 'type == "boleto" and amount >= 20000'),
    ("no-device-pix", "step_up", "active", 'type == "pix" and not has_device and amount > 150'),
    ("small-known", "allow", "active", "amount < 5 and customer_tx_count_30d > 20"),
    ("s-terminal-new", "decline", "shadow", "terminal_tx_count_30d < 3 and amount > 200"),
    ("s-spend-shift", "review", "shadow", "customer_avg_amount_1d > 3 * customer_avg_amount_30d"),
    ("s-night-card", "review", "shadow", 'type == "card" and is_night and amount > 100'),
    ("s-currency", "review", "shadow", 'currency != "BRL"'),
    ("s-risk-1d", "decline", "shadow", "terminal_risk_1d > 0.3 or terminal_risk_30d > 0.2"),
]
