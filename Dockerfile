# Lloyd in a container: the same install command CI proves (scripts/install), run as a non-root
# user, with the SQLite file and the model store on the /data volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LLOYD_HOST=0.0.0.0 \
    LLOYD_PORT=8000 \
    LLOYD_DATABASE_URL=sqlite:////data/lloyd.db \
    LLOYD_MODELS_STORE=/data/models_store

WORKDIR /srv/lloyd
RUN useradd --create-home --uid 10001 lloyd && mkdir -p /data && chown lloyd:lloyd /data

COPY pyproject.toml README.md alembic.ini ./
COPY scripts ./scripts
COPY app ./app
COPY migrations ./migrations
RUN scripts/install

USER lloyd
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
CMD ["scripts/serve"]
