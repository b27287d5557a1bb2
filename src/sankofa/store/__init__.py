"""PostgreSQL: the asyncpg pool, migrations and repositories."""
