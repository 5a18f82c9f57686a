"""The composition root: tenants, envelopes, the warm sandbox cache, the step bridge, API and CLI."""
