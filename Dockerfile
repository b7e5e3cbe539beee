# The one image every chorus service runs (workers, beat, flower, migrate).
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY worker.py settings.py ./
COPY chorus ./chorus
COPY tasks ./tasks
COPY workflows ./workflows
COPY models ./models
COPY providers ./providers
# /var/lib/chorus/beat is owned by chorus in the image, so the named volume docker-compose.yml mounts
# there (beat's schedule file) starts out writable.
RUN pip install -e . && useradd --create-home chorus \
 && mkdir -p /var/lib/chorus/beat && chown -R chorus:chorus /var/lib/chorus
USER chorus
CMD ["chorus", "--help"]
