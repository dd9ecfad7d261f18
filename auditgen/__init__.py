"""auditgen: realistic simulated audit events, published to RabbitMQ with publisher confirms."""
