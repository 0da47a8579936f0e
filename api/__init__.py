"""The REST layer: maps the contract (``CONTRACT.md``) onto job rows and flow runs."""
