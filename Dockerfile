# tempestd in a container: the front, a worker host, or both, by the INI file mounted at
# /etc/tempest/tempest.ini (examples/compose/ has a front and a worker host; docs/deployment.md).
#   docker build -t tempest .
#   docker run --rm -p 1337:1337 -v $PWD/conf/tempest.ini:/etc/tempest/tempest.ini:ro tempest
FROM python:3.11-slim

# hiredis is pulled in by tempest's own requirements; nothing here compiles
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY setup.cfg setup.py pyproject.toml README.md ./
COPY tempest ./tempest
COPY conf ./conf
COPY bin ./bin
RUN pip install . && rm -rf /src

# tempestd runs as an unprivileged user; its run_dir, logs and spool live under /var/lib/tempest
RUN useradd --system --home-dir /var/lib/tempest --create-home --shell /usr/sbin/nologin tempest \
    && mkdir -p /etc/tempest && chown tempest:tempest /var/lib/tempest
USER tempest
WORKDIR /var/lib/tempest

# the front (HTTP), the answer endpoint, the admin listener (/metrics, /healthz, /readyz)
EXPOSE 1337 7000 1338
# a load balancer or the runtime polls /healthz; it needs [admin] listen = 0.0.0.0:1338
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:1338/healthz', timeout=2).status != 200)"]
# SIGTERM drains the front and stops the workers in order (stop_grace_period: graceful_timeout + stopwaitsecs)
STOPSIGNAL SIGTERM
ENTRYPOINT ["tempestd"]
CMD ["-c", "/etc/tempest/tempest.ini"]
