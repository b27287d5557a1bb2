"""Data protection: card numbers (PCI DSS) and personal data (LGPD).

* ``cards``: a primary account number (PAN) is accepted only in the card field,
  where it becomes a keyed HMAC token plus its last four digits; a PAN-looking
  value anywhere else is refused.
* ``documents``: CPF and CNPJ check digits, for fields declared as one.
* ``erasure``: a data subject's personal data removed on request, and the
  retention limit enforced, decision records kept, both in the audit trail.
"""
