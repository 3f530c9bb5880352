# nestmtx-sidecar: slim Python, installed from wheels built in a throwaway stage, run as an
# unprivileged user with its state on the /data volume.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nestmtx_sidecar ./nestmtx_sidecar
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NESTMTX_HOST=0.0.0.0 \
    NESTMTX_PORT=2000 \
    NESTMTX_DATA_DIR=/data
# /data and /spool exist owned by the service user, so fresh named volumes mounted there
# start out writable by it (Docker copies ownership and mode from the image on first mount);
# /data is private to it (0700), as the sidecar would make it anyway.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin nestmtx \
    && mkdir -p /data /spool \
    && chown nestmtx:nestmtx /data /spool \
    && chmod 0700 /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER nestmtx
WORKDIR /data
VOLUME ["/data"]
EXPOSE 2000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('NESTMTX_PORT', '2000'), timeout=2)"]
# SIGTERM: stop taking work, stop Nest streams, drain, exit (well inside Compose's grace period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["nestmtx-sidecar"]
CMD ["serve"]
