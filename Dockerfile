FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RABBITMQ_HOST=rabbitmq \
    RABBITMQ_PORT=5672 \
    RABBITMQ_QUEUE=audit_events \
    APP_PORT=5000 \
    PROMETHEUS_PORT=8000 \
    EVENT_GENERATION_INTERVAL_SECONDS=5

RUN useradd --system --create-home --home-dir /home/auditgen --uid 10001 auditgen \
    && install -d -o auditgen -g auditgen -m 0700 /var/lib/auditgen
WORKDIR /src
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN pip install --no-cache-dir --no-deps . && rm -rf /src

USER auditgen
WORKDIR /home/auditgen
EXPOSE 5000 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('APP_PORT', '5000'), timeout=2)"
CMD ["twistd", "--nodaemon", "--pidfile=", "auditgen"]
