"""Who may spend how much: budgets (USD and tokens per period) and rate limits (token buckets),
checked before any upstream call."""
