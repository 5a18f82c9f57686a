"""The versioned, content-addressed artifact store for tenant code bundles. Never executes code."""
