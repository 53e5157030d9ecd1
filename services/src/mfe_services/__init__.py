"""The universal MFE backend: api-gateway, auth, payments, admin and profile, on Starlette."""

__version__ = "0.1.0"
