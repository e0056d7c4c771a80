# Switchboard server image: `docker build -t switchboard .`
#
# Runs `python -m server serve` on 0.0.0.0:8080 (SWITCHBOARD_PORT, or PORT as set by
# most platforms, moves it). Settings come from SWITCHBOARD_* variables (README,
# "Configuration"); SWITCHBOARD_ENV=production refuses to start without a JWT key,
# so pass SWITCHBOARD_JWT_SECRET or SWITCHBOARD_JWT_PUBLIC_KEY. Apply migrations once
# per deployment with `python -m server migrate` (docker-compose.yml has a one-shot
# service for it). Never bake secrets into the image: .dockerignore keeps .env out.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SWITCHBOARD_ENV=production

# An unprivileged user owning only its working directory (where the embedded
# SQLite default and the development secret file would go if someone uses them).
RUN groupadd --system --gid 10001 switchboard \
 && useradd --system --uid 10001 --gid switchboard --home-dir /app --shell /usr/sbin/nologin switchboard \
 && install -d -o switchboard -g switchboard -m 0750 /app

# Install the package from pyproject.toml (every package it lists, with the SQL
# migrations as package data; tests/unit/test_deploy_files.py checks the COPY lines
# against pyproject), then drop the sources: the server runs from site-packages.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ server/
COPY handlers/ handlers/
COPY channels/ channels/
COPY loadtest/ loadtest/
RUN pip install . && rm -rf /src

WORKDIR /app
USER switchboard:switchboard

EXPOSE 8080

# GET /healthz on the port the server listens on (same precedence as the server:
# SWITCHBOARD_PORT, then PORT, then 8080). Slim images have no curl: use urllib,
# which raises, so exits non-zero, on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('SWITCHBOARD_PORT') or os.environ.get('PORT') or '8080'; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=4)"]

CMD ["python", "-m", "server", "serve", "--host", "0.0.0.0"]
