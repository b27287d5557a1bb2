"""Rules, lists and limits: data that steers decisions beside the model.

``expr`` (the language), ``fields`` (what a rule reads), ``compile`` (to numpy),
``model`` (a rule's shape and checks), ``store`` (PostgreSQL), ``book`` (the
in-process snapshot and the batched reads), ``verdict`` (the precedence that
combines them with the score), ``backtest``.
"""
