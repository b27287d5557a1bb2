"""Who may call what: OAuth 2.0 client credentials, JWT access tokens, roles.

* ``roles``      the four roles and what each is for
* ``kdf``        client secrets, stored as scrypt hashes
* ``keys``       the key ring: one pinned algorithm per ``kid``
* ``tokens``     issuing and verifying access tokens (with a bounded cache)
* ``clients``    the registered clients (table ``auth_clients``) and their live view
* ``ratelimit``  a token bucket per client
* ``rbac``       ``requires(...)``, the one-line dependency every route declares
* ``service``    the above bundled for the lifespan (``open_auth``)
* ``audit_hook`` where token issues and client changes are reported to the audit trail

docs/security.md lists each control and the test that proves it.
"""
