"""auditgen: realistic simulated audit events, published to RabbitMQ with publisher confirms."""

__version__ = "0.1.0"
"""The one version: the package's (setup.cfg reads it), `--version`'s and the OpenAPI document's."""
