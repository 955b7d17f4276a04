"""Authentication: application passwords, Pro Santé Connect-style tokens, certificate identities, SASL."""
