"""The AMQP layer: a connection kept open to one of the broker's nodes, the confirm window, the publisher.

connection.py (nodes, backoff, TLS, the setup deadline; reusable by a consumer), adapter.py (the only code
that touches pika's private parts), confirms.py (delivery tags, acks, nacks, returns, parking),
publisher.py (the outbox to the broker), frames.py (Basic.Publish marshaled directly), topology.py (the
exchange, queue and binding declared), tls.py (certificates and the broker's name). See
docs/architecture.md.
"""
