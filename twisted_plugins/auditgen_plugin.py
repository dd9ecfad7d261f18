"""twistd plugin: `twistd auditgen`. Kept tiny; auditgen.tap is imported only when the command is used."""

from twisted.application.service import ServiceMaker

auditgen = ServiceMaker(
    "auditgen",
    "auditgen.tap",
    "Generate simulated audit events and publish them to RabbitMQ with publisher confirms.",
    "auditgen",
)
