# jkbms-exporter container image: amd64, arm64 and armv7 (Raspberry Pi).
#
#   docker build -t jkbms-exporter .
#   docker run --rm -p 10025:10025 jkbms-exporter                  # simulated BMS
#   docker run --rm -p 10025:10025 -v /dev:/dev \
#     --device-cgroup-rule 'c 188:* rmw' jkbms-exporter \
#     serve --device house=/dev/serial/by-id/usb-...               # a real BMS
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 .

ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# Optional extras to install: "web" (basic auth); "web,ble" adds Bluetooth packs, which also
# need the host's D-Bus socket (-v /run/dbus:/run/dbus:ro) and BlueZ running on the host:
#   docker build --build-arg EXTRAS=web,ble -t jkbms-exporter .
# (with compose: JKBMS_EXTRAS=web,ble in .env, then docker compose build)
ARG EXTRAS=web

# ---- build: wheels for the package and its dependencies --------------------------
# A compiler is only needed where PyPI has no wheel for the platform (PyYAML on armv7);
# it stays in this stage.
FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRAS}]"

# ---- runtime ------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG EXTRAS
# JKBMS_EXPORTER_IMAGE: install hints then say to rebuild with EXTRAS, not to run pip.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JKBMS_EXPORTER_IMAGE=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "jkbms-exporter[${EXTRAS}]" \
 && rm -rf /wheels \
 && useradd --system --uid 10025 --gid dialout --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin jkbms
# Not root: user jkbms (10025) in group dialout (20), which may open serial devices
# (/dev/ttyUSB*, /dev/ttyACM*).
USER 10025:20
EXPOSE 10025
# /-/healthy answers while the HTTP server serves and never reads the BMS (a probe of
# /metrics would add a bus read every 30 s).
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:10025/-/healthy', timeout=9).status == 200 else 1)"]
ENTRYPOINT ["jkbms-exporter"]
CMD ["serve", "--simulate"]
