# Driftline worker / CLI image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY detectors ./detectors
COPY streams ./streams
COPY sinks ./sinks
COPY driftline ./driftline
RUN pip install --no-cache-dir '.[worker,rocksdb]'
RUN useradd --create-home driftline && mkdir -p /var/lib/driftline && chown driftline /var/lib/driftline
USER driftline
ENV DRIFTLINE_DATA_DIR=/var/lib/driftline
ENTRYPOINT ["driftline"]
