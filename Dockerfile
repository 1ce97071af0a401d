# pve_exporter: multi-stage build, slim base, non-root, config and secrets mounted read-only.
#   docker build -t pve-exporter .
#   docker run -p 9221:9221 -v ./config.yaml:/etc/pve-exporter/config.yaml:ro \
#     -v ./secrets:/run/secrets:ro -v pve-exporter-state:/var/lib/pve-exporter pve-exporter

FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pve_exporter ./pve_exporter
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:3.12-slim
LABEL org.opencontainers.image.title="pve_exporter" \
      org.opencontainers.image.description="Proxmox VE clusters to Prometheus and InfluxDB, with a guest power control API" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 pve-exporter \
 && useradd --system --uid 10001 --gid pve-exporter --home-dir /var/lib/pve-exporter --create-home \
      --shell /usr/sbin/nologin pve-exporter \
 && mkdir -p /etc/pve-exporter \
 && chown pve-exporter:pve-exporter /var/lib/pve-exporter
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/pve-exporter
VOLUME ["/var/lib/pve-exporter"]
EXPOSE 9221
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9221/-/healthy', timeout=4)"]
ENTRYPOINT ["pve-exporter"]
CMD ["--config", "/etc/pve-exporter/config.yaml"]
