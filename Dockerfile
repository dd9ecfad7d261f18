FROM python:3.12-slim-bookworm

# The spool is on by default: an event is on disk before the API answers for it, and what the broker has
# not confirmed survives a restart. Opt out (memory only) with the command
#   env -u AUDITGEN_SPOOL_DIR twistd --nodaemon --pidfile= auditgen
# (docs/deployment.md).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RABBITMQ_HOST=rabbitmq \
    RABBITMQ_PORT=5672 \
    RABBITMQ_QUEUE=audit_events \
    APP_PORT=5000 \
    PROMETHEUS_PORT=8000 \
    EVENT_GENERATION_INTERVAL_SECONDS=5 \
    AUDITGEN_SPOOL_DIR=/var/lib/auditgen

RUN groupadd --system --gid 10001 auditgen \
    && useradd --system --create-home --home-dir /home/auditgen --uid 10001 --gid 10001 auditgen \
    && install -d -o auditgen -g auditgen -m 0700 /var/lib/auditgen
WORKDIR /src
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN pip install --no-cache-dir --no-deps . && rm -rf /src

# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/auditgen
# Declared after every RUN: a new volume starts as a copy of the directory (owned by auditgen, 0700).
VOLUME ["/var/lib/auditgen"]
EXPOSE 5000 8000
# Liveness: /livez answers while the process does. A broker outage is not a reason to call the container
# unhealthy (a restart would not bring the broker back); readiness, broker included, is /healthz.
# Straight to loopback: an HTTP_PROXY given to the container must not carry the check away.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/livez' % os.environ.get('APP_PORT', '5000'), timeout=2)"]
CMD ["twistd", "--nodaemon", "--pidfile=", "auditgen"]
